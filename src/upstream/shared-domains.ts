// Domains under which names belong to different owners (the Public Suffix List's idea, kept to what hosts a
// registry, its token realm or a tunnel to one). A token realm may have AUTH_REGISTRIES credentials when it is
// on the domain the registry's host is in (upstream-tokens.ts): under one of these, that domain is everyone's,
// and company.azurecr.io's token would go to whichever tenant's registry named it (vendor.azurecr.io).
const SHARED = new Set([
  'amazonaws.com', // ECR: <account>.dkr.ecr.<region>.amazonaws.com, and every other AWS tenant's endpoint
  'appspot.com',
  'azurecontainer.io',
  'azurecr.io',
  'azurewebsites.net',
  'b-cdn.net',
  'cloudapp.azure.com',
  'cloudfront.net',
  'codeberg.page',
  'core.windows.net',
  'digitaloceanspaces.com',
  'duckdns.org',
  'firebaseapp.com',
  'fly.dev',
  'github.io',
  'gitlab.io',
  'glitch.me',
  'herokuapp.com',
  'jfrog.io',
  'loca.lt',
  'netlify.app',
  'ngrok-free.app',
  'ngrok.app',
  'ngrok.io',
  'nip.io',
  'ocir.io',
  'onrender.com',
  'pages.dev',
  'r2.dev',
  'sslip.io',
  'trycloudflare.com',
  'vercel.app',
  'web.app',
  'workers.dev',
]);

// A country's second level, where anyone registers a name: co.uk, com.au, ne.jp, org.br, ...
const COUNTRY_SECOND_LEVEL = /^(ac|co|com|edu|gen|go|gov|ltd|ne|net|or|org|plc)\.[a-z]{2}$/;

/** Whether the names under `domain` may belong to owners other than `domain`'s: it is, or is under, a shared domain. */
export function isSharedDomain(domain: string): boolean {
  if (COUNTRY_SECOND_LEVEL.test(domain)) return true;
  const labels = domain.split('.');
  for (let i = 0; i < labels.length - 1; i++) if (SHARED.has(labels.slice(i).join('.'))) return true;
  return false;
}
