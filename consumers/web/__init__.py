"""The web dashboard: pages for operators, support staff and analysts over one JSON API, and who may see what
(``web.auth``). ``web.app.create_app`` builds it; ``web.server.serve`` runs it."""
