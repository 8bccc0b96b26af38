// The status summary as someone without admin credentials may see it (the admin door open: no ADMIN_AUTH
// and no PROXY_AUTH): the figures, but image and repository names only where the cache listing shows
// them to anyone (content upstream serves anonymously, cache/tag-listing.ts). A private image's name is
// no more told by the page than by /api/v1/cache.
import type { StatusReport } from '../telemetry/status-report.js';

/** What the cache listing (admin-routes.ts' Listing) shows to anyone: registries, repositories, tags. */
export interface PublicListing {
  registries: Record<string, { repositories: { name: string; tags: string[] }[] }>;
}

export function publicStatus(report: StatusReport, listing: PublicListing): StatusReport {
  const images = new Set<string>();
  const repositories = new Set<string>();
  for (const [registry, { repositories: repos }] of Object.entries(listing.registries)) {
    for (const repo of repos) {
      repositories.add(`${registry}/${repo.name}`);
      for (const tag of repo.tags) images.add(`${registry}/${repo.name}:${tag}`);
    }
  }
  const shown = (registry: string, repository: string | null) => (repository !== null && repositories.has(`${registry}/${repository}`) ? repository : null);
  return {
    ...report,
    topImages: report.topImages.filter((i) => images.has(i.image)),
    recentErrors: report.recentErrors.map((e) => ({
      ...e,
      repository: shown(e.registry, e.repository),
      message: e.repository === shown(e.registry, e.repository) ? e.message : '(private content)',
    })),
    fills: report.fills.map((f) => ({ ...f, repository: shown(f.registry, f.repository) })),
  };
}
