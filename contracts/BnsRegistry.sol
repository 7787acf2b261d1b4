// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title BNS: names in namespaces ("com:mysite") mapped to an owner and device addresses (SPEC 7).
/// @notice A name is free when it was never registered or its registration expired; whoever
///         registers a free name owns it until `expiry`. Only the owner updates the devices,
///         renews (moves `expiry`) or transfers it. Name syntax is checked off chain
///         (chrnode/chain/bns.py) before any call; the contract only bounds the length.
contract BnsRegistry {
    uint256 public constant MAX_NAMESPACE_LENGTH = 128;
    uint256 public constant MAX_DEVICES = 16;

    struct Entry {
        address owner;
        uint64 expiry;
        address[] devices;
    }

    // Keyed by keccak256 of the namespace string, so lookups cost the same for any length.
    mapping(bytes32 => Entry) private _entries;

    event NameRegistered(bytes32 indexed key, string namespace, address indexed owner, uint64 expiry);
    event NameUpdated(bytes32 indexed key, string namespace, address[] devices, uint64 expiry);
    event NameTransferred(bytes32 indexed key, string namespace, address indexed from, address indexed to);

    error BadNamespace(string namespace);
    error BadDevices(uint256 count);
    error ZeroAddress();
    error ExpiryInPast(uint64 expiry, uint256 now_);
    error NameTaken(string namespace, address owner, uint64 expiry);
    error NotOwner(string namespace, address caller, address owner);

    function register(string calldata namespace, address[] calldata devices, uint64 expiry) external {
        bytes32 key = _key(namespace);
        Entry storage entry = _entries[key];
        if (entry.owner != address(0) && entry.expiry > block.timestamp) {
            revert NameTaken(namespace, entry.owner, entry.expiry);
        }
        _checkRecord(devices, expiry);
        entry.owner = msg.sender;
        entry.expiry = expiry;
        entry.devices = devices;
        emit NameRegistered(key, namespace, msg.sender, expiry);
        emit NameUpdated(key, namespace, devices, expiry);
    }

    /// @notice Replace the devices and expiry of a name the caller owns (also after expiry,
    ///         as long as nobody else registered it meanwhile).
    function update(string calldata namespace, address[] calldata devices, uint64 expiry) external {
        bytes32 key = _key(namespace);
        Entry storage entry = _entries[key];
        if (entry.owner != msg.sender) revert NotOwner(namespace, msg.sender, entry.owner);
        _checkRecord(devices, expiry);
        entry.expiry = expiry;
        entry.devices = devices;
        emit NameUpdated(key, namespace, devices, expiry);
    }

    function transfer(string calldata namespace, address newOwner) external {
        bytes32 key = _key(namespace);
        Entry storage entry = _entries[key];
        if (entry.owner != msg.sender) revert NotOwner(namespace, msg.sender, entry.owner);
        if (newOwner == address(0)) revert ZeroAddress();
        entry.owner = newOwner;
        emit NameTransferred(key, namespace, msg.sender, newOwner);
    }

    /// @notice The stored record, expired or not: the caller compares `expiry` with the time.
    ///         An unknown name gives owner 0, no devices, expiry 0 (no revert, so a miss is cheap).
    function resolve(string calldata namespace)
        external
        view
        returns (address owner, address[] memory devices, uint64 expiry)
    {
        Entry storage entry = _entries[_key(namespace)];
        return (entry.owner, entry.devices, entry.expiry);
    }

    function _key(string calldata namespace) private pure returns (bytes32) {
        uint256 length = bytes(namespace).length;
        if (length == 0 || length > MAX_NAMESPACE_LENGTH) revert BadNamespace(namespace);
        return keccak256(bytes(namespace));
    }

    function _checkRecord(address[] calldata devices, uint64 expiry) private view {
        if (devices.length == 0 || devices.length > MAX_DEVICES) revert BadDevices(devices.length);
        for (uint256 i = 0; i < devices.length; i++) {
            if (devices[i] == address(0)) revert ZeroAddress();
        }
        if (expiry <= block.timestamp) revert ExpiryInPast(expiry, block.timestamp);
    }
}
