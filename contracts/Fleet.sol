// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title A fleet: who may use the network through which nodes, and at what price (SPEC 5 step 4, 6).
/// @notice The operator manages two allowlists (nodes that may serve the fleet, devices that may
///         use it) and the price of traffic in CHAI per byte. The device list may be opened
///         (`devicesOpen`): then every device is allowed. A fleet starts closed, because the ticket
///         registry credits nodes for tickets of allowed devices, and on an open fleet a node can
///         sign tickets with keys it made up; only its operator opens it (the development fleet
///         of tools/devchain is opened so that a new device relays with no extra step).
contract Fleet {
    address public operator;
    address public token;
    uint256 public pricePerByte;
    bool public requiresPayment;
    bool public devicesOpen;

    mapping(address => bool) private _nodes;
    mapping(address => bool) private _devices;

    event OperatorChanged(address indexed previousOperator, address indexed newOperator);
    event NodeAllowed(address indexed node, bool allowed);
    event DeviceAllowed(address indexed device, bool allowed);
    event DevicesOpenChanged(bool open);
    event PriceChanged(uint256 pricePerByte);
    event TokenChanged(address indexed token);
    event RequiresPaymentChanged(bool requiresPayment);

    error NotOperator(address caller, address operator);
    error ZeroAddress();

    modifier onlyOperator() {
        if (msg.sender != operator) revert NotOperator(msg.sender, operator);
        _;
    }

    constructor(address token_, uint256 pricePerByte_, bool requiresPayment_) {
        operator = msg.sender;
        token = token_;
        pricePerByte = pricePerByte_;
        requiresPayment = requiresPayment_;
        emit OperatorChanged(address(0), msg.sender);
    }

    function nodeAllowed(address node) external view returns (bool) {
        return _nodes[node];
    }

    /// @notice Whether `device` may use the fleet: listed, or the device list is open.
    function deviceAllowed(address device) external view returns (bool) {
        return devicesOpen || _devices[device];
    }

    /// @notice Whether `device` is on the device list itself (whatever `devicesOpen` says).
    function deviceListed(address device) external view returns (bool) {
        return _devices[device];
    }

    function setOperator(address newOperator) external onlyOperator {
        if (newOperator == address(0)) revert ZeroAddress();
        emit OperatorChanged(operator, newOperator);
        operator = newOperator;
    }

    function setNodeAllowed(address node, bool allowed) external onlyOperator {
        _nodes[node] = allowed;
        emit NodeAllowed(node, allowed);
    }

    function setNodesAllowed(address[] calldata nodes, bool allowed) external onlyOperator {
        for (uint256 i = 0; i < nodes.length; i++) {
            _nodes[nodes[i]] = allowed;
            emit NodeAllowed(nodes[i], allowed);
        }
    }

    function setDeviceAllowed(address device, bool allowed) external onlyOperator {
        _devices[device] = allowed;
        emit DeviceAllowed(device, allowed);
    }

    function setDevicesAllowed(address[] calldata devices, bool allowed) external onlyOperator {
        for (uint256 i = 0; i < devices.length; i++) {
            _devices[devices[i]] = allowed;
            emit DeviceAllowed(devices[i], allowed);
        }
    }

    function setDevicesOpen(bool open) external onlyOperator {
        devicesOpen = open;
        emit DevicesOpenChanged(open);
    }

    function setPricePerByte(uint256 price) external onlyOperator {
        pricePerByte = price;
        emit PriceChanged(price);
    }

    function setToken(address token_) external onlyOperator {
        token = token_;
        emit TokenChanged(token_);
    }

    function setRequiresPayment(bool required) external onlyOperator {
        requiresPayment = required;
        emit RequiresPaymentChanged(required);
    }
}
