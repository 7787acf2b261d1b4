"""Node <-> node links (SPEC 4 peer messages): their codec and the peer hello. Pure code."""
