"""Signed objects of the DHT (SPEC 6): the codec, the kinds, the store's rules and MERKLE. Pure."""
