"""`overlay upgrade --to REF`: move the pin to a new upstream ref (upgrading.py
says how).
"""

from __future__ import annotations

import click

from .. import report, upgrading, workflow
from ..errors import OK
from . import open_overlay


def run(opts, to_ref, yes, upstream, offline, as_json) -> int:
    manifest, session = open_overlay(opts, upstream, offline, writes="upgrade")
    workflow.refuse_unfinished(workflow.load_pending(session))
    if to_ref == manifest.ref:
        unfinished = upgrading.unfinished(manifest.root)
        if unfinished and unfinished.get("to") == to_ref:
            return upgrading.apply_new_pin(session, unfinished, as_json)
        message = f"already pinned at {to_ref}; nothing to do"
        if as_json:
            report.emit_json({"from": to_ref, "to": to_ref, "changed_files": [],
                              "message": message, "exit_code": OK})
        else:
            click.echo(message)
        return OK
    return upgrading.upgrade(session, to_ref, yes, as_json)
