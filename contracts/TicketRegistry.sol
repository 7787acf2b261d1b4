// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

interface IFleetAllowlist {
    function nodeAllowed(address node) external view returns (bool);
    function deviceAllowed(address device) external view returns (bool);
}

/// @title Where nodes submit the tickets devices signed for them, verified on chain (SPEC 5, SPEC 7).
/// @notice A ticket is accepted when it is for this chain, was submitted by its own node, is for
///         the current or the previous epoch, carries a valid device signature (SPEC 2: 65 bytes,
///         v in {0,1}, low s) over the SPEC 5 digest, its fleet allows both node and device, and
///         its totals are higher than the best ticket recorded so far. Totals are cumulative per
///         (node, device, fleet, epoch): a device counts its traffic per node, so the record is
///         keyed by node too, and a node is credited only the increase over its previous best.
///         A rejected ticket does not revert the batch: it is reported with a reason code.
contract TicketRegistry {
    struct Ticket {
        uint256 chainId;
        uint256 epoch;
        address node;
        address fleet;
        uint256 totalConnections;
        uint256 totalBytes;
        bytes localAddress;
        bytes paymentProof;
        bytes signature;
    }

    struct Totals {
        uint256 totalConnections;
        uint256 totalBytes;
    }

    // Reason codes of TicketRejected; 0 is never emitted.
    uint8 public constant WRONG_CHAIN = 1;
    uint8 public constant WRONG_NODE = 2;
    uint8 public constant BAD_EPOCH = 3;
    uint8 public constant BAD_SIGNATURE = 4;
    uint8 public constant FLEET_REFUSED = 5;
    uint8 public constant NOT_HIGHER = 6;

    uint256 public constant MAX_BATCH = 256;
    // Upper half of the secp256k1 order: a signature with a larger s is the malleated twin (EIP-2).
    uint256 private constant HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    uint256 public immutable epochLength;

    mapping(address => mapping(uint256 => uint256)) public bytesServed;
    mapping(address => mapping(uint256 => uint256)) public connectionsServed;
    mapping(bytes32 => Totals) private _best;

    event TicketAccepted(
        address indexed node,
        address indexed device,
        address indexed fleet,
        uint256 epoch,
        uint256 totalConnections,
        uint256 totalBytes,
        uint256 addedBytes
    );
    event TicketRejected(address indexed node, uint256 index, uint8 reason);

    error BatchTooLarge(uint256 count, uint256 limit);
    error ZeroEpochLength();

    constructor(uint256 epochLength_) {
        if (epochLength_ == 0) revert ZeroEpochLength();
        epochLength = epochLength_;
    }

    function currentEpoch() public view returns (uint256) {
        return block.timestamp / epochLength;
    }

    /// @notice The digest a device signs (SPEC 5), for clients that want to check their encoding.
    function ticketDigest(Ticket calldata ticket) public pure returns (bytes32) {
        return keccak256(
            abi.encode(
                ticket.chainId,
                ticket.epoch,
                ticket.node,
                ticket.fleet,
                ticket.totalConnections,
                ticket.totalBytes,
                keccak256(ticket.localAddress)
            )
        );
    }

    /// @notice The device that signed the ticket, or address(0) when the signature is malformed.
    function recoverDevice(Ticket calldata ticket) public pure returns (address) {
        bytes calldata sig = ticket.signature;
        if (sig.length != 65) return address(0);
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v > 1 || uint256(s) > HALF_ORDER) return address(0);
        // SPEC 2 signatures carry v in {0,1}; ecrecover wants Ethereum's 27/28.
        return ecrecover(ticketDigest(ticket), v + 27, r, s);
    }

    function bestTotals(address node, address device, address fleet, uint256 epoch)
        external
        view
        returns (uint256 totalConnections, uint256 totalBytes)
    {
        Totals storage best = _best[_bestKey(node, device, fleet, epoch)];
        return (best.totalConnections, best.totalBytes);
    }

    function submitTickets(Ticket[] calldata tickets) external returns (bool[] memory accepted) {
        if (tickets.length > MAX_BATCH) revert BatchTooLarge(tickets.length, MAX_BATCH);
        accepted = new bool[](tickets.length);
        for (uint256 i = 0; i < tickets.length; i++) {
            uint8 reason = _submit(tickets[i]);
            if (reason == 0) {
                accepted[i] = true;
            } else {
                emit TicketRejected(msg.sender, i, reason);
            }
        }
    }

    function _submit(Ticket calldata ticket) private returns (uint8) {
        if (ticket.chainId != block.chainid) return WRONG_CHAIN;
        if (ticket.node != msg.sender) return WRONG_NODE;
        uint256 epoch = currentEpoch();
        if (ticket.epoch > epoch || ticket.epoch + 1 < epoch) return BAD_EPOCH;
        address device = recoverDevice(ticket);
        if (device == address(0)) return BAD_SIGNATURE;
        if (!_allows(ticket.fleet, IFleetAllowlist.nodeAllowed.selector, ticket.node)) return FLEET_REFUSED;
        if (!_allows(ticket.fleet, IFleetAllowlist.deviceAllowed.selector, device)) return FLEET_REFUSED;

        Totals storage best = _best[_bestKey(ticket.node, device, ticket.fleet, ticket.epoch)];
        // Cumulative totals (SPEC 5 step 5): neither may go down and at least one must go up.
        if (ticket.totalBytes < best.totalBytes || ticket.totalConnections < best.totalConnections) {
            return NOT_HIGHER;
        }
        if (ticket.totalBytes == best.totalBytes && ticket.totalConnections == best.totalConnections) {
            return NOT_HIGHER;
        }
        uint256 addedBytes = ticket.totalBytes - best.totalBytes;
        bytesServed[ticket.node][ticket.epoch] += addedBytes;
        connectionsServed[ticket.node][ticket.epoch] += ticket.totalConnections - best.totalConnections;
        best.totalBytes = ticket.totalBytes;
        best.totalConnections = ticket.totalConnections;
        emit TicketAccepted(
            ticket.node, device, ticket.fleet, ticket.epoch, ticket.totalConnections, ticket.totalBytes, addedBytes
        );
        return 0;
    }

    /// @dev A low-level staticcall so that a fleet address without code, or one answering
    ///      garbage, refuses the ticket instead of reverting the whole batch.
    function _allows(address fleet, bytes4 selector, address who) private view returns (bool) {
        if (fleet.code.length == 0) return false;
        (bool ok, bytes memory ret) = fleet.staticcall{gas: 100_000}(abi.encodeWithSelector(selector, who));
        return ok && ret.length == 32 && abi.decode(ret, (uint256)) == 1;
    }

    function _bestKey(address node, address device, address fleet, uint256 epoch) private pure returns (bytes32) {
        return keccak256(abi.encode(node, device, fleet, epoch));
    }
}
