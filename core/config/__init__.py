"""The routing host's configuration file: TOML in, a validated `HostConfig` out.

The file is read once at start-up, so every mistake in it is worth a precise message: a
`ConfigError` always names the file, the line and the key, e.g.::

    inbox.toml:23: queue "french": unknown key "ofer_timeout" (did you mean "offer_timeout"?)
    inbox.toml:4: [host]: synchronous must be one of FULL, NORMAL, got "OFF"
    inbox.toml:31: queue "a": overflow cycle a -> b -> a

The first mistake found is reported; fix it and load again. Problems with the file as a whole
(missing, unreadable, over 1 MiB) carry no line, because no line is to blame.

Shape of the file (core/examples/inbox.toml, what `inbox-tui admin init` writes, is a
commented example; core/examples/demo.toml is the demo's)::

    [host]                         # optional; every key has a default
    listen = "127.0.0.1:8600"      # host:port, IPv6 as [::1]:8600; port 0 = any free port
    data_dir = "/var/lib/inbox"    # optional; relative to the config file's directory
    synchronous = "FULL"           # SQLite durability: "FULL" or "NORMAL"
    session_ttl = 43200            # seconds an agent session stays valid
    max_pending_offers = 1         # routed offers one agent may have pending at once
    day_retention_days = 35        # days the per-minute queue figures are kept (1..3660)
    allowed_origins = ["https://agents.example.com"]  # browser origins, besides the host's
                                   # own, that may open /agent; scheme://host[:port], no path

    [[channel]]                    # at least one
    name = "chat"                  # unique; letters, digits and . _ @ + -
    mode = "sync"                  # sync | async | record
    label = "Web chat"             # optional
    customer_attributes = ["language"]  # widget attributes a customer may set for routing
                                   # (default none; others are dropped, see core/host/widget.py)
    reopen_window = 604800         # seconds after the close in which a customer's message
                                   # reopens the conversation (default 7 days; 0 = never);
                                   # later it starts a new one linked to the closed one
    language = "en"                # the channel's default language for customer notices
    notices.busy.fr = "Tous nos agents sont occupés."  # a notice's text per language tag:
                                   # busy | overflow | closed | reopened (core/notices.py);
                                   # at most 1000 characters; missing ones: built-in English
    details = [{ attribute = "severity", label = "Severity" }]  # item attributes agents
                                   # see on offers and in the record pane, in order (default:
                                   # all, descriptions first, labels from the keys)
    weight = 1                     # capacity one of its items uses, 1..1000 (default 1);
                                   # POST /api/v1/items may give another per item
    [channel.email]                # optional: an e-mail channel (async only; docs/email.md)
    listen = "127.0.0.1:2525"      # the host's SMTP server, where the MTA relays the mail
    address = "support@example.com"  # the From of replies
    smarthost = "127.0.0.1:25"     # the SMTP server replies are handed to
    max_bytes = 10485760           # the largest mail accepted, at most 10 MiB (default)
    inbound_secret_file = "provider.key"  # optional: REST intake on this channel must be
                                   # signed with this key (docs/channels.md); unsigned = 401
    [channel.delivery]             # optional: POST agent messages and conversation events
    url = "https://sms.example.com/hook"  # to the provider (core/service/outbox.py)
    secret_file = "hook.key"       # HMAC-SHA256 key that signs each delivery, 32+ bytes
    transport = "webhook"          # webhook (default)
    timeout = 10                   # seconds one try may take
    backoff_base = 1               # seconds before the first retry, doubled each time,
    backoff_cap = 300              # at most this, less up to half at random (jitter)
    give_up_after = 259200         # seconds after which a delivery is failed (3 days)

    [[presence]]                   # optional; Available, Away and Offline always exist
    name = "Available"
    channels = ["chat"]            # channels an agent in this state can be offered
    label = ""                     # optional

    [[group]]                      # agent groups: queues take the agents of their groups
    name = "tier1"
    label = "Tier 1"               # optional

    [[queue]]
    name = "french"                # unique
    channel = "chat"               # a declared channel
    condition = 'language == "fr"' # core.routing.condition; empty matches everything
    order = 10                     # lower is tried first (default 100)
    rule = "most_capacity"         # most_capacity | least_recent | round_robin
    skills = [{ name = "french", level = 2 }]  # required skills, level 1..10 (default 1)
    prefer_skill_level = false     # prefer higher summed skill levels before the rule
    groups = ["tier1"]             # declared groups; none = every enabled agent
    offer_timeout = 30             # seconds to accept an offer (default 30)
    timeout_presence = "Away"      # presence an agent is moved to after missing an offer
    max_wait = 120                 # seconds in queue before overflow (or a notice)
    overflow = "general"           # queue on the same channel; needs max_wait
    reply_deadline = 60            # seconds for the first reply before the item is reclaimed
    wrap_up_time = 60              # seconds of wrap-up after a chat ends
    affinity_window = 3600         # seconds a returning customer prefers their last agent
    abandon_after = 172800         # seconds of customer silence before abandonment
    [queue.sla]                    # optional service-level targets (core/sla.py); at least one
    wait = 30                      # seconds from arrival until an agent accepts
    first_reply = 60               # seconds from accepting until the agent's first reply
    near = 0.8                     # the fraction of a target after which it is "near" (0..1)

    [[agent]]                      # seed agents (created at first start)
    id = "alice"
    display_name = "Alice Martin"
    role = "agent"                 # agent | supervisor | admin
    skills = { french = 3 }        # skill -> level 1..10
    capacity = { chat = 3 }        # channel -> concurrent items; a missing channel = none
    universal_capacity = 6         # items across all channels
    groups = ["tier1"]
    disabled = false
    password = "..."               # 8 to 1024 characters; sets a login at first start.
                                   # Better: inbox-tui admin agent passwd (no secret in a file)

    [[template]]
    shortcut = "greet"             # unique within its scope
    title = "Greeting"
    text = "Hello {customer.name}, I'm {agent.name}."   # fields: see TEMPLATE_FIELDS
    scope = "global"               # global | queue:<name> | agent:<id>

    [records.incident]             # optional; also [records.case]
    states = ["new", "in_progress", "on_hold", "resolved", "closed"]  # workflow order; the
                                   # first is a new record's state. Default: these (a case's
                                   # has awaiting_customer instead of on_hold)

    [widget]                       # the customer chat widget; every key has a default
    title = "Support"
    greeting = "Hi! How can we help?"
    accent = "#2f6fde"             # #rrggbb
    max_message_length = 2000      # characters, at most 16000
    channel = "chat"               # default: the first sync channel
    new_chats_per_address = 20     # new chats one client address may start a minute
    embed_origins = ["https://www.example.com"]  # sites that may frame /widget and open
                                   # /widget/ws; default none: any origin may open the socket,
                                   # only the host itself may frame the page
    identity_secret_file = "widget-identity.secret"  # HMAC key of signed customer identities;
                                   # relative to the config's directory; at least 32 bytes,
                                   # not world-readable (make one: openssl rand -hex 32)
    [attachments]                  # files; every key has a default
    max_bytes = 10485760           # the largest file anyone may send, at most 10 MiB
    allowed_types = ["image/png", "application/pdf", "text/plain"]  # what customers (widget,
                                   # REST) may upload; default: common images and documents
                                   # (DEFAULT_UPLOAD_TYPES), never HTML or SVG
    allowed_extensions = ["png", "pdf", "txt"]  # and the name's ending, no dot; default
                                   # DEFAULT_UPLOAD_EXTENSIONS
    link_ttl = 900                 # seconds a widget download link stays valid (10 s to 7 days)

Presence defaults: a missing Available lists every channel, a missing Away or Offline lists
none; a declared Available without `channels` also lists every channel. Offline can never
list channels. HostConfig.presences holds Available, Away, Offline first, then custom ones.

Durations are seconds (integer or float), greater than 0 and at most ten years.

By stage: `load` finds, reads and parses the file; `schema` is its tables as msgspec checks
them; `validate` rewords msgspec's errors, applies the cross-table rules (the queue rules are
core.routing.queues') and builds the result; `locate` finds a key's line for a message;
`settings` is what a load yields.
"""

from core.config.load import (
    MAX_CONFIG_BYTES,
    default_config_path,
    example_config_path,
    load_config,
    parse_config,
)
from core.config.schema import MAX_CAPACITY, MAX_SECONDS, MAX_SKILL_LEVEL
from core.config.settings import (
    DEFAULT_LISTEN,
    ConfigError,
    EmailSettings,
    Group,
    HostConfig,
    HostSettings,
    Secret,
    WidgetSettings,
    normalize_origin,
)
from core.config.validate import (
    MAX_SECRET_BYTES,
    MIN_SECRET_BYTES,
    RESERVED_ATTRIBUTES,
    TEMPLATE_FIELDS,
)

__all__ = [
    "DEFAULT_LISTEN",
    "MAX_CAPACITY",
    "MAX_CONFIG_BYTES",
    "MAX_SECONDS",
    "MAX_SECRET_BYTES",
    "MAX_SKILL_LEVEL",
    "MIN_SECRET_BYTES",
    "RESERVED_ATTRIBUTES",
    "TEMPLATE_FIELDS",
    "ConfigError",
    "EmailSettings",
    "Group",
    "HostConfig",
    "HostSettings",
    "Secret",
    "WidgetSettings",
    "default_config_path",
    "example_config_path",
    "load_config",
    "normalize_origin",
    "parse_config",
]
