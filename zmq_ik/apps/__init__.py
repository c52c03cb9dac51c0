"""The applications behind the ``zmq-ik`` subcommands (`zmq_ik.cli` parses their options):
`compute` (stroke files in, StrokeBatch out), `serve` (a broker and its workers as one
service), `report` (ping, status, fk texts), `plot` (the PNG report). Nothing below imports
them."""
