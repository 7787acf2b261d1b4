"""The device client (SPEC 3-5): what a device runs to reach a node.

``client`` connects, proves the key in hello and opens ports; ``link`` is its side of the TLS
connection; ``ports`` the port ends and tunnels; ``tickets`` pays ahead automatically; ``key``
holds the device's key file; ``cli`` is ``chr-node device``. Nothing here imports the node's
server side or Thespian: a device needs only the codecs and the TLS transport of ``chrnode.edge``.
"""
