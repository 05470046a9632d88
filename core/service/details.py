"""What a work item is about, as agents are shown it: its attributes, labelled and ordered by
its channel's `details` (core/config), on offers, on a chat's opening and in the snapshot."""

from __future__ import annotations

from core.model import AttrValue, WorkItem, attribute_label
from core.protocol import Detail

# Shown first, in this order, when the channel lists nothing: what the item is about before
# what it carries (language, plan, ...).
DESCRIPTIONS = ("short_description", "subject", "description")


def item_details(item: WorkItem, shown: tuple[tuple[str, str], ...] | None) -> list[Detail]:
    """`shown` is the channel's (attribute, label) list; None shows every attribute, the
    descriptions first and then the rest by key. An attribute the item lacks is left out."""
    attributes = item.attributes
    if shown is None:
        keys = [k for k in DESCRIPTIONS if k in attributes]
        keys += sorted(k for k in attributes if k not in DESCRIPTIONS)
        shown = tuple((k, attribute_label(k)) for k in keys)
    return [
        Detail(label=label, value=_text(attributes[key]))
        for key, label in shown
        if key in attributes and _text(attributes[key])
    ]


def _text(value: AttrValue) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return " ".join(str(value).split())
