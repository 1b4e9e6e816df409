"""Developer and operator tools that are not part of the running daemon: the subscriber behind
`edgedet watch`, the outbox benchmark, the crash-torture harness and the fleet simulation."""
