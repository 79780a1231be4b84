"""The web console that `batchyard serve` serves at `/console` (docs/console.md).

Server-rendered pages (Jinja2, autoescaped) over the same read service and operations as the
REST API, signed in with the API's access keys; htmx (vendored, no build step) swaps page
fragments when a server-sent event says a job changed. Every page reads without JavaScript.

Modules: `app` (`install`: mounts it on the API), `web` (templates, security headers, HTML
errors), `sessions` (sign-in, cookie, CSRF), `jobs` (jobs list, job page, heat-map,
actions), `instances` (instance page, logs), `clusters`, `submission`, `drawing` (the DAG
and heat-map as SVG), `live` (the change hub), `logs` (the log tail).
"""
