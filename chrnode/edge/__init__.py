"""The EdgeV2 device port (SPEC 3-5): the frame and message codecs (pure), the TLS transport built
for many idle connections, and the server side (sessions, their deadlines, handlers, the port
table, usage and tickets, admission). The device side of the same protocol is chrnode.device."""
