"""The chain client (SPEC 7): failover Ethereum JSON-RPC, ABI and contracts, BNS, fleets and
payments, the tiered cache, the event watch and ticket submission. Blocking calls: the RemoteChain
actors run them on their thread pools (actors/chain_pool.py)."""
