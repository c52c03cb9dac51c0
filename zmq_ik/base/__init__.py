"""The base layer, under every other: checks of values from peers and files (`checks`), the
docstring helper (`docs`), process and host helpers (`process`, `memory`). It imports nothing
from zmq_ik but `zmq_ik.errors`."""
