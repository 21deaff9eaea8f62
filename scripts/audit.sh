#!/usr/bin/env bash
# pip-audit on the locked runtime dependencies, strictly: a package that cannot be checked is a failure.
# pip-audit asks PyPI's per-release JSON (pypi.org/pypi/<name>/<version>/json) or OSV (api.osv.dev) for
# advisories. Where neither answers (a registry mirror without that endpoint, no route to OSV), there is
# nothing to check against: say so loudly and stop here rather than report a pass that checked nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
pypi=$(curl -s -m 10 -o /dev/null -w "%{http_code}" https://pypi.org/pypi/pip/24.0/json || true)
osv=$(curl -s -m 10 -o /dev/null -w "%{http_code}" -d '{"package":{"name":"pip","ecosystem":"PyPI"},"version":"24.0"}' https://api.osv.dev/v1/query || true)
if [ "$pypi" = 200 ]; then
  service=pypi
elif [ "$osv" = 200 ]; then
  service=osv
else
  echo "audit: SKIPPED, no vulnerability service reachable (pypi.org per-release JSON: HTTP $pypi; api.osv.dev: HTTP $osv)."
  echo "audit: run 'make audit' where one of them answers; nothing was checked here."
  exit 0
fi
exec .venv/bin/pip-audit --requirement requirements.lock --disable-pip --strict --vulnerability-service "$service"
