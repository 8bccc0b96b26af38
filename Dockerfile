# Build stage: compile TypeScript with the dev dependencies (the same `npm ci` and build CI runs).
FROM node:22-bookworm-slim AS build
WORKDIR /app
# build-ca.pem (optional, never in git): more CAs npm trusts on top of Node's own, for a network that
# re-signs TLS. The glob lets the build go on without it; only this stage sees it.
COPY package.json package-lock.json build-ca.pe[m] ./
RUN if [ -f build-ca.pem ]; then export NODE_EXTRA_CA_CERTS="$PWD/build-ca.pem"; fi \
 && npm ci --no-audit --no-fund --no-update-notifier
COPY tsconfig.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

# Runtime stage: production dependencies and the compiled output only, as a non-root user.
FROM node:22-bookworm-slim
ENV NODE_ENV=production \
    PORT=3128 \
    MIRROR_PORT=5000 \
    CA_DIR=/ca \
    CACHE_DIR=/docker_mirror_cache
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
RUN mkdir -p /ca /docker_mirror_cache && chown node:node /ca /docker_mirror_cache
USER node
VOLUME ["/ca", "/docker_mirror_cache"]
EXPOSE 3128 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3128) + '/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node is PID 1 and handles SIGTERM/SIGINT itself (graceful shutdown). With WORKERS > 1 (the default on a
# machine with several CPUs) it is the primary: it forks the workers, drains them on SIGTERM and reaps them.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["serve"]
