"""The network process's loop: listeners (device ports, the peer port) and outbound links."""
