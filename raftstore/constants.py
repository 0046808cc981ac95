"""Every bound and tuning knob of raftstore in one place.

Names put the unit and the qualifier last (`frame_bytes_max`, `proposal_timeout_s`) so related
limits line up. Anything that queues, loops, retries or frames has its bound here.
"""

# --- Raft commands -------------------------------------------------------------------------
command_bytes_max = 512 * 1024          # a replicated command larger than this is refused
command_id_bytes = 16                   # random id that makes a retried proposal apply once
# A range remembers the outcome of each command id for its last dedup_window_entries log
# entries (forgotten in steps of dedup_forget_every_entries, at the same index on every
# replica). A retry is deduplicated while its first attempt is inside the window: at 1,000
# writes/s to one range that is over 3 minutes, far beyond a client's retry deadline (15 s by
# default). Bounds the dedup table at about 100 bytes x 200,000 per range.
dedup_window_entries = 200_000
dedup_forget_every_entries = 1_000
proposal_timeout_s = 10.0               # a proposal with no outcome by then fails as ambiguous
proposals_in_flight_max = 10_000        # per group; beyond it a proposal is refused at once

# --- pysyncobj configuration we always run with ---------------------------------------------
# Entries smaller than the batch size never travel as pickled 'transmission' chunks, which our
# layer refuses: a command is at most command_bytes_max, so this keeps every entry inline.
append_entries_batch_bytes = 2 * 1024 * 1024
append_entries_period_s = 0.05
raft_min_timeout_s = 1.0
raft_max_timeout_s = 2.0
log_compaction_entries_min = 5000
log_compaction_time_min_s = 300

# --- Journal ---------------------------------------------------------------------------------
journal_record_bytes_max = command_bytes_max + 4096
journal_rewrite_bytes_min = 8 * 1024 * 1024   # rewrite the file when it holds this much garbage
snapshot_chunk_rows = 1000

# --- HLC -------------------------------------------------------------------------------------
max_clock_offset_ns = 500_000_000

# --- Ranges and reads --------------------------------------------------------------------------
scan_rows_max = 10_000

# --- Peer transport ------------------------------------------------------------------------------
peer_frame_bytes_max = 8 * 1024 * 1024       # > append_entries_batch_bytes plus framing
peer_handshake_timeout_s = 5.0
peer_send_buffer_bytes_max = 64 * 1024 * 1024  # a peer this far behind is disconnected
peer_redial_interval_s = 0.5
peer_connect_timeout_s = 3.0
tick_interval_s = 0.01
loop_stall_report_ms = 20          # node-loop iterations this long are listed in status (loop_stalls)
loop_stalls_kept = 64              # ... the most recent ones, [unix time, ms]

# --- Client protocol (raftstore.wire, raftstore.kv) ---------------------------------------------
client_frame_bytes_max = 4 * 1024 * 1024    # one request or response frame's msgpack body
client_timeout_s_default = 15.0             # kv.Client: overall bound on one call, retries included
client_attempt_timeout_s_max = 5.0          # kv.Client: socket timeout of a single attempt
client_backoff_s_min = 0.05                 # kv.Client: first retry delay (before jitter)
client_backoff_s_max = 1.0                  # kv.Client: the delay doubles up to this cap
drain_timeout_s = 15.0
repl_typeahead_reads_max = 16              # raftstore sql: reads (1 KiB each) of keys typed after Enter

# --- Ranges --------------------------------------------------------------------------------------
range_bytes_max = 8 * 1024 * 1024      # a range larger than this splits (flag --range-max-bytes)
range_cache_entries_max = 10_000
route_retries_max = 20                 # stale-descriptor retries of one request

# --- Idle ranges (quiescence) ----------------------------------------------------------------------
group_active_s = 2.0            # a group with traffic this recent keeps fast timers
active_tick_interval_s = 0.02   # periodic tick of a busy group (events tick it at once)
idle_tick_interval_s = 1.0      # an idle group ticks this often
idle_heartbeat_interval_s = 5.0 # an idle leader's own heartbeats (pysyncobj appendEntriesPeriod)
node_heartbeat_interval_s = 0.25  # one frame per peer keeps every idle group's followers patient
clock_log_interval_s = 10.0           # log a peer's rejected clock at most this often
