"""The web console: a live view of the host in a browser, its JSON API, and Prometheus metrics (issue 16).

``fields`` (pure) shows a message field by field; ``monitor`` keeps the recent exchanges, the terminals' day and the
anomalies, fed by the pipeline; ``metrics`` counts for Prometheus; ``http`` serves all of it with aiohttp in the
host's own event loop; ``static/`` is the page itself (HTML, CSS and a little JS, no build step, no CDN).
"""
