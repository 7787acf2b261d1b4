"""`chr_channels` and `network_stats.channels` from the snapshot part the Channels actor publishes."""

from __future__ import annotations

from typing import Any

from chrnode.edge.channel_ledger import ChannelLedger
from tests.test_jsonrpc_api import rpc, setup


def _published() -> dict[str, Any]:
    ledger = ChannelLedger()
    member = {"device": "0x" + "11" * 20, "ref": 2**62 + 1, "flags": "rws", "owner": True}
    listed = [{"target": "0x" + "22" * 20, "port": "feed", "ref": 2**62 + 1, "members": [member]}]
    status = {
        "run": "a",
        "channels": 1,
        "members": 1,
        "opened_total": 3,
        "joined_total": 5,
        "slow_closed": 1,
        "bytes_delivered": 12345,
        "list": listed,
    }
    assert ledger.report(status, 1_800_000_000.0)
    return ledger.view()


def test_chr_channels_lists_the_published_channels_and_network_stats_counts_them() -> None:
    d, view, _, _ = setup()
    view.set_part("channels", _published())
    answer = rpc(d, "chr_channels")["result"]
    assert answer["channels"] == 1 and answer["members"] == 1 and answer["bytes_delivered"] == 12345
    (channel,) = answer["list"]
    assert channel["port"] == "feed" and channel["members"][0]["owner"] is True
    stats = rpc(d, "network_stats")["result"]["channels"]
    assert stats == {
        "channels": 1,
        "members": 1,
        "peak_members": 1,
        "opened_total": 3,
        "joined_total": 5,
        "slow_closed": 1,
        "bytes_delivered": 12345,
    }
    methods = {m["name"] for m in rpc(d, "rpc.discover")["result"]["methods"]}
    assert "chr_channels" in methods


def test_chr_channels_answers_with_every_key_when_nothing_or_junk_was_published() -> None:
    for part in (None, "junk", {"list": "not a list", "channels": "x"}):
        d, view, _, _ = setup(snapshot={})
        if part is not None:
            view.set_part("channels", part)
        answer = rpc(d, "chr_channels")["result"]
        assert answer["list"] == [] and answer["members"] == 0
        assert rpc(d, "network_stats")["result"]["channels"]["bytes_delivered"] == 0
