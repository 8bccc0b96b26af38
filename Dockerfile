# Build stage: compile TypeScript with the dev dependencies.
FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

# Runtime stage: only production dependencies and the compiled output, as a non-root user.
FROM node:22-bookworm-slim
ENV NODE_ENV=production \
    PORT=3128 \
    CA_DIR=/ca \
    CACHE_DIR=/docker_mirror_cache
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
RUN mkdir -p /ca /docker_mirror_cache && chown node:node /ca /docker_mirror_cache
USER node
VOLUME ["/ca", "/docker_mirror_cache"]
EXPOSE 3128
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["serve"]
