"""CPU stand-in for ``sglang.srt.distributed``.

Upstream this package re-exports parallel_state, utils and communication_op.
The tests load the real parallel_state.py under its dotted name themselves,
so the stand-in package is empty.
"""
