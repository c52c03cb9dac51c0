"""ZIK/1 codec: the one place that knows how messages are framed (spec: docs/protocol.md).

Two layers, so that each party decodes only what it needs:

* the *envelope* (`parse_message`): protocol, command, ids, service, operation, deadline.
  The broker routes on this alone and forwards the payload frames untouched;
* the *payload* (`encode_payload` / `decode_payload`): a msgpack header plus raw array
  frames described by the header. Clients and workers decode it; arrays are built with
  ``np.frombuffer`` on the received frame, so they are read without a copy.

Every malformed input raises `ProtocolError` with a specific `ErrorCode`; nothing here
raises anything else on bad network input.

The pieces: `messages` (constants, commands, one dataclass per message kind), `parse`
(reading and bounding what a peer sends), `build` (the frames to send), `payload` (the
codec), `sockets` (endpoints, sending and receiving). Their public names are re-exported
here: ``from zmq_ik.protocol import ...`` is the one import path. `handshakes` (a refused
CURVE handshake, seen by clients and workers) is imported by its own name.
"""

from __future__ import annotations

from zmq_ik.errors import ErrorCode as ErrorCode
from zmq_ik.errors import ProtocolError as ProtocolError
from zmq_ik.protocol.build import cancel_frames as cancel_frames
from zmq_ik.protocol.build import cancel_ids as cancel_ids
from zmq_ik.protocol.build import decline_frames as decline_frames
from zmq_ik.protocol.build import decode_error as decode_error
from zmq_ik.protocol.build import disconnect_frames as disconnect_frames
from zmq_ik.protocol.build import error_frames as error_frames
from zmq_ik.protocol.build import error_payload as error_payload
from zmq_ik.protocol.build import heartbeat_frames as heartbeat_frames
from zmq_ik.protocol.build import ready_frames as ready_frames
from zmq_ik.protocol.build import reply_frames as reply_frames
from zmq_ik.protocol.build import request_frames as request_frames
from zmq_ik.protocol.build import warming_frames as warming_frames
from zmq_ik.protocol.messages import ALIVE as ALIVE
from zmq_ik.protocol.messages import BROKER_SERVICE as BROKER_SERVICE
from zmq_ik.protocol.messages import CANCEL as CANCEL
from zmq_ik.protocol.messages import DEFAULT_ENDPOINT as DEFAULT_ENDPOINT
from zmq_ik.protocol.messages import ENDPOINT_ENV as ENDPOINT_ENV
from zmq_ik.protocol.messages import FEATURE_DECLINE as FEATURE_DECLINE
from zmq_ik.protocol.messages import FLAG_BUSY as FLAG_BUSY
from zmq_ik.protocol.messages import FLAG_IDLE as FLAG_IDLE
from zmq_ik.protocol.messages import MAX_CANCEL_IDS as MAX_CANCEL_IDS
from zmq_ik.protocol.messages import MAX_TIMEOUT_MS as MAX_TIMEOUT_MS
from zmq_ik.protocol.messages import PROTOCOL as PROTOCOL
from zmq_ik.protocol.messages import PROTOCOL_PREFIX as PROTOCOL_PREFIX
from zmq_ik.protocol.messages import RECONNECT_MAX as RECONNECT_MAX
from zmq_ik.protocol.messages import REPLY_COMMANDS as REPLY_COMMANDS
from zmq_ik.protocol.messages import WARMING_INTERVAL as WARMING_INTERVAL
from zmq_ik.protocol.messages import WARMING_TTL as WARMING_TTL
from zmq_ik.protocol.messages import WATCH as WATCH
from zmq_ik.protocol.messages import Command as Command
from zmq_ik.protocol.messages import Decline as Decline
from zmq_ik.protocol.messages import Disconnect as Disconnect
from zmq_ik.protocol.messages import Heartbeat as Heartbeat
from zmq_ik.protocol.messages import Message as Message
from zmq_ik.protocol.messages import Ready as Ready
from zmq_ik.protocol.messages import Reply as Reply
from zmq_ik.protocol.messages import Request as Request
from zmq_ik.protocol.messages import Warming as Warming
from zmq_ik.protocol.parse import MAX_PROGRESS as MAX_PROGRESS
from zmq_ik.protocol.parse import check_progress as check_progress
from zmq_ik.protocol.parse import check_size as check_size
from zmq_ik.protocol.parse import check_text as check_text
from zmq_ik.protocol.parse import check_worker_header as check_worker_header
from zmq_ik.protocol.parse import frames_nbytes as frames_nbytes
from zmq_ik.protocol.parse import parse_command as parse_command
from zmq_ik.protocol.parse import parse_message as parse_message
from zmq_ik.protocol.payload import ALLOWED_DTYPES as ALLOWED_DTYPES
from zmq_ik.protocol.payload import LIMITS as LIMITS
from zmq_ik.protocol.payload import Frame as Frame
from zmq_ik.protocol.payload import Limits as Limits
from zmq_ik.protocol.payload import OutFrame as OutFrame
from zmq_ik.protocol.payload import Payload as Payload
from zmq_ik.protocol.payload import decode_payload as decode_payload
from zmq_ik.protocol.payload import encode_payload as encode_payload
from zmq_ik.protocol.payload import frame_buffer as frame_buffer
from zmq_ik.protocol.payload import frame_bytes as frame_bytes
from zmq_ik.protocol.payload import frame_len as frame_len
from zmq_ik.protocol.payload import pack_header as pack_header
from zmq_ik.protocol.payload import unpack_header as unpack_header
from zmq_ik.protocol.sockets import TRANSPORTS as TRANSPORTS
from zmq_ik.protocol.sockets import check_endpoint as check_endpoint
from zmq_ik.protocol.sockets import endpoints_setting as endpoints_setting
from zmq_ik.protocol.sockets import new_routing_id as new_routing_id
from zmq_ik.protocol.sockets import recv_burst as recv_burst
from zmq_ik.protocol.sockets import recv_frames as recv_frames
from zmq_ik.protocol.sockets import send_frames as send_frames
from zmq_ik.protocol.sockets import set_link_heartbeats as set_link_heartbeats
from zmq_ik.protocol.sockets import set_worker_link_heartbeats as set_worker_link_heartbeats
from zmq_ik.protocol.sockets import split_endpoints as split_endpoints
