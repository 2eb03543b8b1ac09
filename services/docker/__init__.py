"""The container deployment (docker-compose.yml): image entry points and health checks.

Nothing here is used by the embedded path; the containers run the same project code through
:mod:`services.docker.entry`. See docs/compose.md.
"""
