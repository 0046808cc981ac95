"""Every bound and tuning knob of raftstore in one place.

Names put the unit and the qualifier last (`frame_bytes_max`, `proposal_timeout_s`) so related
limits line up. Anything that queues, loops, retries or frames has its bound here.
"""

# --- Raft commands -------------------------------------------------------------------------
command_bytes_max = 512 * 1024          # a replicated command larger than this is refused
command_id_bytes = 16                   # random id that makes a retried proposal apply once
# A range remembers the outcome of each command id for its last dedup_window_entries log
# entries: at every dedup_forget_every_entries-th index each replica forgets the older ones, so
# all replicas forget the same outcomes at the same index (a rule of the log, never of a node's
# clock or disk). An outcome is filed under the key its command touched, and a split hands the
# outcomes of the keys that move to the new range (the parent forgets them), so each outcome is
# kept by one range and splits never multiply them. A retry is deduplicated while its first
# attempt is inside the window: at 1,000 writes/s to one range that is over 3 minutes, far
# beyond a client's retry deadline (15 s by default). Bounds the dedup table at about
# 100 bytes x 200,000 per range. Not by age: a TTL judged by the HLC timestamps in the log would
# let one proposer whose clock stepped forward make every replica forget outcomes whose
# retries are still coming, and kv.Client's deadline (timeout_s) has no upper bound.
dedup_window_entries = 200_000
dedup_forget_every_entries = 1_000
proposal_timeout_s = 10.0               # a proposal with no outcome by then fails as ambiguous
# A client command a follower's node handed the range's leader (only leaders propose): ambiguous
# if the leader has not answered by then (its own proposal timeout, plus the WAN round trip).
forwarded_proposal_timeout_s = proposal_timeout_s + 2.0
locking_read_hold_s = 2.0               # a locking read's latches wait this long for the write that follows it
# Range leases (raftstore.kvserver.lease): expiration leases, extended while the range is in use
# (when less than half is left), left to lapse when idle. After a leaseholder dies, its ranges
# wait out at most this long (plus an election) before another node serves them.
lease_duration_s = 2.5
range_unavailable_s = 5.0              # a request with no answer from its ranges' leaseholders fails "unavailable" after this
timestamp_cache_entries_max = 4096     # per range; past it the oldest entries fold into its low-water mark
faults_check_interval_s = 0.05         # tests only: how often a node reads its faults file
lease_transfer_wait_s = 1.0           # a holder offering its lead away serves nothing this long (Store._offer_lead)
drain_offer_interval_s = 0.5          # a draining node offers a range's lead away again this often
# Closed timestamps (raftstore.kvserver.closedts): a leaseholder closes this far behind its clock,
# and closes every range it serves on the side transport this often (CockroachDB's defaults).
closed_lag_s = 3.0
closed_side_interval_s = 0.2
closed_full_every_s = 5.0             # and sends every member again this often (a frame lost to a test's partition)
# A range read by followers keeps its lease (and so its closed timestamp) this long after the
# last follower read a replica reported on the side transport: an expiration lease would lapse
# on a range only followers read, and their reads would go to the leaseholder.
follower_demand_keep_s = 30.0
# Garbage collection of old versions (raftstore.kvserver.gc): versions older than this that a
# newer one hides go (--gc-ttl); each leaseholder looks this often; one GC command removes at
# most this many versions.
gc_ttl_s = 4 * 3600.0
gc_interval_s = 60.0
gc_batch_versions = 2000
gc_step_min_s = 1.0                    # the threshold moves only when it would move at least this
lease_read_inline_keys_max = 16        # a leaseholder read of at most this many point keys (no scan) runs on the
                                       # node loop, on its own connection: two thread hand-offs less than a reader's
lease_readers = 2                      # threads (each with its own SQLite read connection) serving leaseholder reads
leader_wait_s = 2.0                     # a client command for a range with no leader known waits this long for one
# A gateway holds a request for a range with no leader it can reach (an election, a leader down)
# until this long before the request's --unavailable-timeout, then answers it definitely (Node._propose_at_leader).
leader_wait_margin_s = 1.0
proposals_in_flight_max = 10_000        # per group; beyond it a proposal is refused at once

# --- pysyncobj configuration we always run with ---------------------------------------------
# Entries smaller than the batch size never travel as pickled 'transmission' chunks, which our
# layer refuses: a command is at most command_bytes_max, so this keeps every entry inline.
append_entries_batch_bytes = 2 * 1024 * 1024
append_entries_period_s = 0.05
raft_min_timeout_s = 1.0
raft_max_timeout_s = 2.0
# Each replica's election timeout falls in its own slot of [min, max] (1/n of it for n replicas,
# by the group's election order for the term; raftstore.raft.group.election_rank), randomised
# over this fraction of the slot: the rest is the gap that lets the first candidate's vote
# requests arrive before the next replica's timer runs out (0.27 s at 3 replicas, 1-2 s).
election_slot_jitter = 0.2
log_compaction_entries_min = 5000
log_compaction_time_min_s = 300

# --- Journal ---------------------------------------------------------------------------------
journal_record_bytes_max = command_bytes_max + 4096
journal_rewrite_bytes_min = 8 * 1024 * 1024   # rewrite the file when it holds this much garbage
# Storage errors are crash-only (raftstore.raft.failstop): the node exits with this code (EX_IOERR).
exit_code_storage_failure = 74
# SQLITE_BUSY / SQLITE_LOCKED at a commit of applied commands is retried this often, this far
# apart, inside the apply; past that it is a storage error like any other.
sqlite_busy_retries_max = 20
sqlite_busy_retry_interval_s = 0.05
# Free-space reserve (raftstore.storage.diskspace): below it a node refuses proposals and new log entries.
disk_reserve_bytes_min = 256 * 1024 * 1024      # default reserve: the larger of this ...
disk_reserve_fraction = 0.02                     # ... and this share of the disk (flag --disk-reserve-bytes)
disk_ballast_bytes_max = 256 * 1024 * 1024      # default ballast file: the smaller of this ...
disk_ballast_fraction = 0.01                     # ... and this share of the disk (flag --disk-ballast-bytes)
disk_check_interval_s = 0.05                     # the node loop reads the free space this often
snapshot_chunk_rows = 1000

# --- HLC -------------------------------------------------------------------------------------
max_clock_offset_ns = 500_000_000

# --- Ranges and reads --------------------------------------------------------------------------
scan_rows_max = 10_000
scan_bytes_max = 2 * 1024 * 1024        # a batch's scans answer at most this many key+value bytes (then a resume key)
batch_ops_max = 1_000                   # ops of one batch (one range's part of a request)
set_fields_width_max = 4096             # a SetFields op's array width (a SQL row's columns)
increment_abs_max = (1 << 62) - 1       # an Increment's delta, and the value it may make, stay within this

# --- Peer transport ------------------------------------------------------------------------------
peer_frame_bytes_max = 8 * 1024 * 1024       # > append_entries_batch_bytes plus framing
peer_handshake_timeout_s = 5.0
peer_send_buffer_bytes_max = 64 * 1024 * 1024  # a peer this far behind is disconnected
peer_redial_interval_s = 0.5
# Emulated WAN delay (--latency-matrix): a delayed frame leaves when due give or take this much.
# The node loop's poll sleeps in whole milliseconds, rounded up, so frames released only once due
# would leave 0.5 ms late on average (1 ms per round trip, measured as probes' 61.5 ms under a 60
# ms matrix); released from half a millisecond before their time, they leave on time on average.
wan_release_slack_s = 0.0005
# ... and from that much earlier again, learnt: the timer's own lateness (waking a virtual machine's
# idle CPU can take 0.1-0.3 ms), measured on the frames released (PeerNetwork.release_lead_s), at most:
wan_release_lead_max_s = 0.002
peer_connect_timeout_s = 3.0
peer_stranger_log_interval_s = 60.0   # a non-peer on the peer port is logged once per host this often
peer_stranger_hosts_max = 1024        # ... hosts remembered for that
tick_interval_s = 0.01
loop_task_max_ms = 20              # a statement holds the client port's loop at most about this long
                                   # before it yields (raftstore.coop.checkpoint); the node loop's own
                                   # iterations are meant to stay under it too, and are reported if not:
loop_stall_report_ms = loop_task_max_ms   # node-loop iterations this long are listed in status (loop_stalls)
loop_stalls_kept = 64              # ... the most recent ones, [unix time, ms]

# --- Client protocol (raftstore.wire, raftstore.kv) ---------------------------------------------
client_frame_bytes_max = 4 * 1024 * 1024    # one request or response frame's msgpack body
client_timeout_s_default = 15.0             # kv.Client: overall bound on one call, retries included
client_attempt_timeout_s_max = 5.0          # kv.Client: socket timeout of a single attempt
client_backoff_s_min = 0.05                 # kv.Client: first retry delay (before jitter)
client_backoff_s_max = 1.0                  # kv.Client: the delay doubles up to this cap
drain_timeout_s = 15.0
listen_backlog = 1024                 # connections the kernel queues for a port before accept (a burst of clients)
# --- Client port limits (raftstore/server/client_port.py; node flags of the same names) -----------
client_connections_max = 4096         # --max-client-connections: past it the oldest idle connection goes
client_idle_timeout_s = 300.0         # --client-idle-timeout: a connection with nothing in flight is closed after this
client_frame_deadline_s = 10.0        # a frame begun must be whole this soon, or its connection is closed
client_in_flight_max = 16             # requests of one connection being answered; past it, it is not read
client_memory_bytes = 128 * 1024 * 1024   # --max-client-memory: request and response bytes buffered, node-wide
client_write_timeout_s = 30.0         # an answer its client does not read for this long closes the connection
client_conn_free_bytes = 16 * 1024    # what a connection may hold with the node's budget spent (small requests go on)
client_conn_bytes = 16 * 1024         # what an open connection costs of its own (asyncio's objects), charged to the budget
client_budget_wait_s = 1.0            # a frame begun that the spent budget keeps unread this long is refused
client_page_bytes = 1024 * 1024       # a larger SQL result goes out in pages of about this size
sql_result_bytes_max = 64 * 1024 * 1024   # --max-result-bytes: a SQL result larger than this is refused
# --- PostgreSQL wire protocol port (raftstore/server/pg_port.py; --pg-addr) ------------------------
# The same ClientLimits and node-wide MemoryBudget as the client port; these bound what only pgwire has.
pg_startup_bytes_max = 10_000         # a startup packet (PostgreSQL's MAX_STARTUP_PACKET_LENGTH)
pg_message_bytes_max = client_frame_bytes_max   # one message (Parse, Bind, Query...): past it, an error and close
pg_prepared_max = 256                 # prepared statements plus portals one connection holds
pg_prepared_bytes_max = 4 * 1024 * 1024   # bytes of their texts and bound parameters, per connection
pg_batch_bytes = 64 * 1024            # answer bytes written (and drained) at a time: a result streams in batches

# --- Metrics and health (raftstore/node/metrics.py, raftstore/server/http_port.py) -------------------
# A scrape asks the node loop for the figures only it may read (ranges, leaders, Raft counters);
# an answer not back by then is left out of that scrape (counted), so a stalled loop cannot hang
# a scraper, and a scrape never touches the store from the HTTP thread.
metrics_loop_wait_s = 1.0
http_connections_max = 16             # /metrics and /health requests answered at once (more are refused)
http_timeout_s = 5.0                   # a scraper's connection idle this long is closed
repl_typeahead_reads_max = 16              # raftstore sql: reads (1 KiB each) of keys typed after Enter
repl_completion_tables_max = 100           # raftstore sql: tables whose columns Tab completes (one SHOW each)

# --- SQL statements (sql/gateway.py) -------------------------------------------------------------
# A statement that met a write conflict before any of its writes applied (SQLSTATE 40001) is run
# again by the gateway itself, this many times at most, after a jittered backoff doubling from
# the min to the max; then the client gets the 40001.
sql_conflict_retries_max = 10
sql_read_restarts_max = 10       # a statement whose reads keep finding versions within their uncertainty interval
sql_conflict_backoff_s_min = 0.005
sql_conflict_backoff_s_max = 0.25

# --- Ranges --------------------------------------------------------------------------------------
range_bytes_max = 8 * 1024 * 1024      # a range larger than this splits (flag --range-max-bytes)
range_cache_entries_max = 10_000
route_retries_max = 20                 # stale-descriptor retries of one request
zone_refresh_interval_s = 1.0          # a store reads the zones (home regions) from its meta replica this often
zones_max = 10_000                     # zones read at most (one per table with a home region)

# --- Idle ranges (quiescence) ----------------------------------------------------------------------
group_active_s = 2.0            # a group with traffic this recent keeps fast timers
active_tick_interval_s = 0.02   # periodic tick of a busy group (events tick it at once)
idle_tick_interval_s = 1.0      # an idle group ticks this often
resting_tick_periods = 4        # ... and this many times less often while nothing of its own is timed (Store._may_rest)
election_tick_slack_s = 0.001   # a follower ticks this long after its election timer runs out (Store.tick)
leader_silent_s = 0.6           # a leader's node not heard this long (node heartbeats every 0.25 s): its followers watch their timers
silence_check_interval_s = 0.1  # how often a store looks for peers newly silent
idle_heartbeat_interval_s = 1.0 # a leader not busy and not caught up sends appends this often (pysyncobj's
                                # appendEntriesPeriod); a caught-up one sends none (Store._quiesce)
node_heartbeat_interval_s = 0.25  # one frame per peer keeps every idle group's followers patient
peer_rtt_probes_kept = 16             # a peer's round trip: the least of its last this many clock probes (~4 s)
forming_log_interval_s = 10.0         # a node still forming its cluster says whom it waits for this often
log_file_bytes_max = 16 * 1024 * 1024  # a node's log file (DATA_DIR/logs/raftstore.log) rotates past this
log_files_kept = 5                     # rotated log files kept beside it (raftstore.log.1 .. .5)
# A line that can repeat per request, heartbeat, tick or frame (a clock out of bounds, a peer's bad
# frames, a failing snapshot) is logged once per condition this often, with the count of the
# repeats held back (raftstore.loglimit); this many conditions are remembered per limiter.
log_repeat_interval_s = 10.0
log_repeat_keys_max = 1024

# --- Consistency checks (raftstore.kvserver.consistency) -------------------------------------------------
# A check's command commits, then every replica's checksum of the range at that index must reach
# the node running the check within this long; a replica that has not applied the index by then
# (down, partitioned, behind) is reported as not reporting and the range as incomplete.
consistency_report_timeout_s = 5.0
consistency_checksums_kept = 4096      # a node's own replica checksums remembered (newest kept)
consistency_asks_max = 10_000          # peers' checksum requests waiting for an index at once
consistency_error_chars_max = 500      # an error text carried in a checksum reply
# Rows the hashing thread reads from SQLite per call: each fetch holds the GIL while it copies the
# rows into Python, so a fetch of 100 rows of 8 KiB (under 1 MiB) keeps the node loop's wait for
# the GIL short where 1000 (the snapshot chunk) would copy 8 MiB at once (bench.checksum_cost).
consistency_chunk_rows = 100
# A client call of check_consistency: the check's proposal (proposal_timeout_s at most) plus the
# wait for the replicas' checksums, plus room for the answer.
consistency_call_timeout_s = proposal_timeout_s + consistency_report_timeout_s + 5.0
