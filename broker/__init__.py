"""The zmq-ik broker: a Majordomo-style ROUTER that load-balances IK requests by robot name."""

from zmq_ik.broker._broker import LISTENING as LISTENING
from zmq_ik.broker._broker import Broker as Broker
from zmq_ik.broker._core import BrokerCore as BrokerCore
from zmq_ik.settings.broker import BrokerSettings as BrokerSettings

__all__ = ["LISTENING", "Broker", "BrokerCore", "BrokerSettings"]
