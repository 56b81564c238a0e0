"""Live control: QA steers a running host over MQTT (scenarios, terminals, the clock, the test cards).

``commands`` is pure: a request's bytes in, a reply and the events to commit out. ``listener`` is the edge
that subscribes to ``<prefix>/control/+``, commits the events and publishes the replies.
"""
