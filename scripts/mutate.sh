#!/usr/bin/env bash
# npm run mutate [group...]: StrykerJS over the security modules, one group at a time (stryker.config.mjs;
# groups: policy auth bcrypt digest gate access), at nice 10 and one mutant at a time; then the score per module and
# every surviving mutant (scripts/mutation-report.ts). Reports: reports/mutation/<group>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(policy auth bcrypt digest gate access)
for group in "${groups[@]}"; do
  echo "== mutate: $group"
  MUTATE_GROUP="$group" nice -n 10 npx stryker run stryker.config.mjs
done
node --import tsx scripts/mutation-report.ts $(printf "reports/mutation/%s.json " "${groups[@]}")
