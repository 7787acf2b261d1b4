"""The network process's loop: listeners (device ports, the peer port), peer links, the pool that
keeps them, the DHT over them, the objects it holds.

Everything here runs on the network process's one event loop (SPEC 4: port bytes never cross an
actor boundary); the decisions are the pure machines of chrnode.peer.pool, chrnode.dht and
chrnode.objects, and these modules are their thin adapters to sockets and timers.

    server.NetworkServer    the loop's listeners and outbound links (edge ports, the peer port)
    peers.PeerNetwork       one PeerLink per peer, Connection.Pool's actions; owns the two below
    peer_port.PeerPort      the peer port listener, admission of inbound connections
    dialer.Dialer           dialling: connect(), the pool's dials, connect()s awaiting a dial slot
    dht_service.DhtService  DhtNode driven over the links: lookups, STORE, FIND_VALUE, timers
    codecs                  signed objects (SPEC 6) as the DHT's contacts and values
"""
