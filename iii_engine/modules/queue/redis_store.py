"""Queue jobs in Redis: accepted jobs survive an engine restart, and several engines can share a queue.

Layout per store queue ``Q`` (``<prefix>`` is the optional ``key_prefix``): ``<prefix>queue:Q:jobs`` (hash job id →
job JSON), ``…:lane:<lane>`` (list of job ids), ``…:ready`` (list of lanes), ``…:active`` (sorted set lane →
lease deadline), ``…:delayed`` (sorted set lane → due time), ``…:dlq`` (sorted set job id → failed_at),
``…:dlq_entries`` (hash job id → entry JSON) and ``…:done`` (sorted set job id → when it left the queue, for
:data:`DONE_KEPT_MS`, so a push repeated late stores nothing). With a
:class:`~iii_engine.modules.queue.store.TopicShare`, ``<prefix>queue-topic-bytes`` counts the bytes of JSON the topic
queues' jobs and dead letters take (:data:`TOPIC_BYTES_KEY`), counted again from the set ``<prefix>queue-topics`` of
topic queues (:data:`TOPICS_KEY`) at start and before a refusal. ``Q`` is escaped (``%`` → ``%25``, ``:`` →
``%3A``), so no queue's keys meet another's whatever the names and lanes (issue #8); names without those characters
are unchanged. Every state change is one Lua script, so engines sharing the store never see half a move. A lane
whose lease expires (its engine died mid-job) goes back to *ready*.

Example:
    >>> store = RedisQueueStore("redis://127.0.0.1:6379/0", key_prefix="demo:")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Collection, Mapping
from typing import Any, ClassVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

import iii  # noqa: F401 - the package before its modules (CPython gh-83065)
from iii.wire import dumps, loads
from iii_streams.redis import check_reachable, escape_name, waiting_client
from iii_streams.redis_internals import sent_nothing

from .store import (
    PUT_OFF_LOOK,
    Claim,
    DeadLetter,
    Job,
    NotSent,
    PutOff,
    QueueCounts,
    QueueFull,
    StoreFull,
    TopicShare,
    monotonic_ms,
)
from .store import now_ms as _engine_now_ms

log = logging.getLogger(__name__)

EVICTION_CHECK_S = 2.0
"""How long the start-up look at Redis's eviction policy may take (a Redis that is down is not waited for)."""

START_CHECK_S = 5.0
"""How long :meth:`RedisQueueStore.prepare` waits for Redis to answer its ``PING`` at the module's start."""

DONE_KEPT_MS = 120_000
"""How long a queue remembers the id of a job that left it (done or dead letter): a push of that id again within
it (redis-py retrying a push whose reply was lost, by default up to 10 times with ≤ 1 s between) stores nothing.
Costs Redis about 130 bytes per job finished in the window (16 MB at 1,000 jobs a second)."""

MAX_DONE_KEPT_MS = 86_400_000
"""Largest ``done_kept_ms``: a day of finished ids is already far more than any client's retries need."""

TOPIC_BYTES_KEY = "queue-topic-bytes"
"""The key (after the store's ``key_prefix``) counting the bytes of JSON every topic queue's jobs and dead letters
take, kept by the scripts that store, change or remove them, shared by the engines sharing the store. Jobs stored
before it was kept are not in it: their removal takes it down to 0 at most, never below. Keys deleted by hand, jobs
an engine of an older version removed, or the counter itself evicted or deleted leave it wrong: it is counted again
from the topic queues listed in :data:`TOPICS_KEY` when the store is prepared and before an enqueue is refused for
it (:meth:`RedisQueueStore.recount_topic_bytes`)."""

TOPICS_KEY = "queue-topics"
"""The key (after the store's ``key_prefix``) of the set of topic queues holding jobs or dead letters (the prefix of
each one's keys, ``<prefix>queue:<escaped name>:``): added to by a push or redrive to a topic's queue, a queue taken
out once it holds neither (its last job done or discarded), so the count is made again without a ``SCAN``. A queue
only an engine of an older version pushed to is not in it until a push of this version."""

RECOUNT_EVERY_S = 5.0
"""Least time between two counts made again before enqueues refused for ``max_topic_bytes``: a flood past the bound
is refused at the cost of one counter read, not of a count per enqueue. A count that took longer than a twentieth of
it waits twenty times its own time, so the counts before refusals take at most 5 % of Redis's time per engine."""

# The bytes a topic queue's jobs and dead letters take (their JSON) change: the counter (key '': the queue is no topic,
# nothing is counted) follows.
# The set of topic queues (TOPICS_KEY) sits next to the counter: its name is the counter's with TOPIC_BYTES_KEY
# replaced, so no script takes one more key. ``base`` is a queue's key prefix (its jobs key less 'jobs').
_COUNT_BYTES = """
local function count_bytes(key, delta)
  if key ~= '' and delta ~= 0 and redis.call('INCRBY', key, delta) < 0 then redis.call('SET', key, 0) end
end
local function topics_key(key) return string.sub(key, 1, -1 - BYTES_NAME_LEN) .. 'TOPICS_NAME' end
local function note_topic(key, base)
  if key ~= '' then redis.call('SADD', topics_key(key), base) end
end
local function forget_topic_if_empty(key, base)
  if key ~= '' and redis.call('EXISTS', base .. 'jobs', base .. 'dlq_entries') == 0 then
    redis.call('SREM', topics_key(key), base)
  end
end
""".replace("BYTES_NAME_LEN", str(len(TOPIC_BYTES_KEY))).replace("TOPICS_NAME", TOPICS_KEY)

# The counter made again from what the topic queues listed hold, exactly what count_bytes added for them: the JSON of
# each job (jobs hash) and dead letter (dlq_entries hash); a listed queue holding neither leaves the list. One script,
# so no change by another engine falls between the count and the SET. Its work grows with the topic jobs and dead
# letters held (one HSTRLEN each: 2.2 s for a million jobs of 200 bytes on a loaded test machine).
# KEYS: the counter, the set of topic queues · the new count
_RECOUNT = """
local total = 0
for _, base in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local held = false
  for _, hash in ipairs({base .. 'jobs', base .. 'dlq_entries'}) do
    local ids = redis.call('HKEYS', hash)
    for i = 1, #ids do total = total + redis.call('HSTRLEN', hash, ids[i]) end
    if #ids > 0 then held = true end
  end
  if not held then redis.call('SREM', KEYS[2], base) end
end
redis.call('SET', KEYS[1], total)
return total
"""

# A push already stored answers "stored" again: a client retrying the script after its reply was lost (redis-py 6+
# by default, or a redis_url with retry_on_timeout) put the id in its lane twice, and once the job was done the
# lane's head named a job that was gone, holding a FIFO group for good. A job that already ran (its id in ``done``)
# or died (a dead letter) is not stored again either: the retry came after another engine finished it, and the job
# ran twice.
# A topic's job past the topics' bytes answers {-1, the bytes they hold}, nothing stored.
# KEYS: jobs, ready, dlq, done · ARGV: lane prefix, job id, job, lane, most jobs the queue may hold (0: no limit),
# the topics' byte counter ('': no topic), the most bytes they may hold
_PUSH = _COUNT_BYTES + """
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return 1 end
if redis.call('ZSCORE', KEYS[3], ARGV[2]) or redis.call('ZSCORE', KEYS[4], ARGV[2]) then return 1 end
if tonumber(ARGV[5]) > 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return 0 end
if ARGV[6] ~= '' then
  local used = tonumber(redis.call('GET', ARGV[6]) or '0')
  if used + #ARGV[3] > tonumber(ARGV[7]) then return {-1, used} end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
count_bytes(ARGV[6], #ARGV[3])
note_topic(ARGV[6], string.sub(KEYS[1], 1, -5))
if redis.call('RPUSH', ARGV[1] .. ARGV[4], ARGV[2]) == 1 then redis.call('RPUSH', KEYS[2], ARGV[4]) end
return 1
"""

# A lane's head id without its job (left by a push an older version stored twice) is dropped, not claimed: it
# answered "no job" and held the lane, and every job behind it, for good. A lane listed in ready while it is held or
# delayed (an older version listed it twice) is skipped: claimed, its head ran twice at once.
# A lane whose head job names a skipped function (functions another engine sharing the store serves and this one
# lacks) goes to the tail of ready for that engine to claim; one whose head job names a function put off (this engine
# waits for a worker to register it) goes to delayed until that function's look, its job unchanged. At most SKIP_LOOK
# of them (and no more than ready held) per call, so a queue full of them costs a bounded look and never a loop; a
# lane put off leaves ready, so a call that stopped at the bound having put some off answers "more" (the caller calls
# again at once: thousands of such jobs no longer hold the queue's other jobs back). A look not after ``now`` puts
# nothing off, so a lane put off is never due again within the call. Finding a job's function reads its whole body:
# once the bodies looked past reach SKIP_BYTES, a lane whose head would go beyond goes back to the head of ready and
# the call ends (the next looks further), so a call copies at most that plus one job (before, 128 jobs of 512 KB
# each at every poll of an idle engine held Redis for up to 170 ms). The function is the JSON string after the first
# '"function_id":' (a job's own strings cannot hold that text unescaped, and the key comes before its data), looked
# up in a table of the skipped ones built once per call and in the engine's hash of put-off functions (JSON string ->
# look; each claim brings only the changes since the last: sent whole with every claim, a thousand functions made each
# claim 15 times dearer), so the cost per lane does not grow with the number of functions named.
# KEYS: jobs, ready, active, delayed, this engine's put-off hash · ARGV: lane prefix, now, lease, 1 to read that hash
# (else 0), 1 to empty it first (else 0), count of skipped functions, the skipped functions (JSON strings), then
# pairs of a function (JSON string) and its new look (0: no longer put off) for the hash
# Answers {more (0/1), the job taken or '', the first due time in delayed once ready is empty ('': not looked at, -1:
# nothing delayed; the caller's idle wait needs no second round trip), then per lane put off: the lane, its function
# (JSON string), its look}.
_CLAIM = """
local now = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
for i = #due, 1, -1 do
  redis.call('ZREM', KEYS[4], due[i])
  redis.call('LPUSH', KEYS[2], due[i])
end
local put_off = ARGV[4] == '1'
local skip_count = tonumber(ARGV[6])
local skip = {}
for i = 7, 6 + skip_count do skip[ARGV[i]] = true end
if ARGV[5] == '1' then redis.call('DEL', KEYS[5]) end
for i = 7 + skip_count, #ARGV - 1, 2 do
  if ARGV[i + 1] == '0' then redis.call('HDEL', KEYS[5], ARGV[i])
  else redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 1]) end
end
if put_off then redis.call('PEXPIRE', KEYS[5], PUT_OFF_KEPT_MS) end
local looks, scanned = 0, 0
if skip_count > 0 or put_off then looks = math.min(redis.call('LLEN', KEYS[2]), SKIP_LOOK) end
local out = {0, '', ''}
local function function_of(job)
  local _, key_end = string.find(job, '"function_id":', 1, true)
  if not key_end or string.sub(job, key_end + 1, key_end + 1) ~= '"' then return nil end
  local i = key_end + 2
  while true do
    local at = string.find(job, '["\\\\]', i)
    if not at then return nil end
    if string.sub(job, at, at) == '"' then return string.sub(job, key_end + 1, at) end
    i = at + 2
  end
end
local function stop()
  if #out > 3 and redis.call('LLEN', KEYS[2]) > 0 then out[1] = 1 end
  return out
end
while true do
  local lane = redis.call('LPOP', KEYS[2])
  if not lane then
    local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    out[3] = first[2] or -1
    return out
  end
  if not (redis.call('ZSCORE', KEYS[3], lane) or redis.call('ZSCORE', KEYS[4], lane)) then
    local lane_key = ARGV[1] .. lane
    local id = redis.call('LINDEX', lane_key, 0)
    if id and scanned > 0 and scanned + redis.call('HSTRLEN', KEYS[1], id) > SKIP_BYTES then
      redis.call('LPUSH', KEYS[2], lane)
      return stop()
    end
    local job = id and redis.call('HGET', KEYS[1], id)
    while id and not job do
      redis.call('LPOP', lane_key)
      id = redis.call('LINDEX', lane_key, 0)
      job = id and redis.call('HGET', KEYS[1], id)
    end
    local named = job and looks > 0 and function_of(job)
    local later = named and put_off and tonumber(redis.call('HGET', KEYS[5], named))
    if later and later <= now then later = nil end
    if later then
      redis.call('ZADD', KEYS[4], later, lane)
      out[#out + 1] = lane
      out[#out + 1] = named
      out[#out + 1] = later
    elseif named and skip[named] then
      redis.call('RPUSH', KEYS[2], lane)
    elseif job then
      redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), lane)
      out[2] = job
      return out
    end
    if named and (later or skip[named]) then
      looks = looks - 1
      scanned = scanned + #job
      if looks == 0 then return stop() end
    end
  end
end
"""

# A finishing step applies only while the job is the head of its lane: an engine whose lease ran out may finish
# a job another engine has since finished; that late step must neither bring it back (a dead letter a redrive runs
# again) nor take the lease of the lane's next job (run a second time, out of order, by a third engine).
# ARGV[1..3]: lane prefix, lane, job id
_IS_HEAD = """
local lane_key = ARGV[1] .. ARGV[2]
if redis.call('LINDEX', lane_key, 0) ~= ARGV[3] then return 0 end
"""

# Remove the lane's head; requeue the lane only if it was active (held by an engine), forget it once empty. A late
# step (the lease ran out) that empties a lane waiting in ready takes it out of ready too: left there, the next push
# to the lane (a FIFO group's next message) listed it a second time, and two claims ran that message at once. The
# job id is kept in ``done`` (the ``jobs`` key's sibling) for KEPT_MS, the store's ``done_kept_ms`` (see _PUSH); the
# key expires with the last of them.
# Redis's clock, not the caller's: engines sharing the queue keep one window whatever their clocks say.
# KEYS: jobs, ready, active, delayed · the script sets bytes_key (the topics' byte counter, '' for none) first
_POP_HEAD = """
local done = string.sub(KEYS[1], 1, -5) .. 'done'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
count_bytes(bytes_key, -redis.call('HSTRLEN', KEYS[1], ARGV[3]))
redis.call('HDEL', KEYS[1], ARGV[3])
redis.call('LPOP', lane_key)
local rest = redis.call('LLEN', lane_key)
local held = redis.call('ZREM', KEYS[3], ARGV[2]) == 1
if held and rest > 0 then redis.call('RPUSH', KEYS[2], ARGV[2]) end
if rest == 0 and not held then
  redis.call('ZREM', KEYS[4], ARGV[2])
  redis.call('LREM', KEYS[2], 0, ARGV[2])
end
redis.call('ZADD', done, now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', done, '-inf', now - KEPT_MS)
redis.call('PEXPIRE', done, KEPT_MS)
forget_topic_if_empty(bytes_key, string.sub(KEYS[1], 1, -5))
return 1
"""

# KEYS: jobs, ready, active, delayed · ARGV: lane prefix, lane, job id, the topics' byte counter ('': none)
_FINISH = _COUNT_BYTES + "local bytes_key = ARGV[4]\n" + _IS_HEAD + _POP_HEAD

# The dead letter and the lane's move in one script: a caller cut short between two round trips would leave the
# job both a dead letter and active (run again once its lease ran out).
# KEYS: jobs, ready, active, delayed, dlq, dlq entries · ARGV: lane prefix, lane, job id, failed_at, entry JSON, the
# topics' byte counter ('': none)
# A script is atomic but not transactional: a call short of an argument would fail at its HSET after the ZADD.
_DEAD = _COUNT_BYTES + """
if #KEYS ~= 6 or #ARGV ~= 6 then return redis.error_reply('dead letter move: 6 keys and 6 arguments expected') end
local bytes_key = ARGV[6]
""" + _IS_HEAD + """
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[3])
redis.call('HSET', KEYS[6], ARGV[3], ARGV[5])
count_bytes(bytes_key, #ARGV[5])
""" + _POP_HEAD

# KEYS: jobs, active, delayed · ARGV: lane prefix, lane, job id, job JSON, due, the topics' byte counter ('': none)
_RETRY = _COUNT_BYTES + _IS_HEAD + """
count_bytes(ARGV[6], #ARGV[4] - redis.call('HSTRLEN', KEYS[1], ARGV[3]))
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
if redis.call('ZREM', KEYS[2], ARGV[2]) == 1 then redis.call('ZADD', KEYS[3], ARGV[5], ARGV[2]) end
return 1
"""

# KEYS: ready, active · ARGV: lane prefix, lane, job id
_RELEASE = _IS_HEAD + """
if redis.call('ZREM', KEYS[2], ARGV[2]) == 1 then redis.call('LPUSH', KEYS[1], ARGV[2]) end
return 1
"""

# KEYS: ready, active · ARGV: now
_RECOVER = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for i = #expired, 1, -1 do
  redis.call('ZREM', KEYS[2], expired[i])
  redis.call('LPUSH', KEYS[1], expired[i])
end
return #expired
"""

# KEYS: delayed · ARGV: due, lanes... · the count of delayed lanes made due at ``due`` (none is put later)
_BRING_FORWARD = """
local moved = 0
for i = 2, #ARGV do
  local due = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if due and tonumber(due) > tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    moved = moved + 1
  end
end
return moved
"""

# KEYS: dlq, dlq entries · ARGV: job id, the topics' byte counter ('': none) · 1 if the letter was there
_DISCARD = _COUNT_BYTES + """
count_bytes(ARGV[2], -redis.call('HSTRLEN', KEYS[2], ARGV[1]))
redis.call('HDEL', KEYS[2], ARGV[1])
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
forget_topic_if_empty(ARGV[2], string.sub(KEYS[2], 1, -12))
return removed
"""

CLOCK_READ_S = 10.0
"""How often a store reads Redis's clock again (``TIME``) against its monotonic clock, to move the times it keeps onto
Redis's (see :meth:`RedisQueueStore._shift`: a step of this engine's wall clock is followed at once; the two clocks'
drift, within this)."""
CLOCK_TRIP_MS = 20
"""A read of Redis's clock whose round trip took longer than this (ms), and than twice the kept read's, is not kept
(see :meth:`RedisQueueStore._shift`) ..."""
CLOCK_KEPT_S = 60.0
"""... unless the kept one is this old (s)."""
CLOCK_STEP_MS = 100
"""A change of the engine's wall clock against its monotonic one past this (ms) is taken for a step of the wall clock
and followed at once (see :meth:`RedisQueueStore._shift`)."""

BRING_FORWARD_BATCH = 1000
"""Lanes per script call of :meth:`RedisQueueStore.bring_forward`: one call never holds Redis for long."""

# KEYS: dlq, dlq entries, jobs, ready · ARGV: lane prefix, job id, job JSON, lane, most jobs the queue may hold
# (0: no limit), the topics' byte counter ('': none) · 1 moved, 0 no such letter, -1 the queue is full (the letter
# stays). A job is smaller than its letter: it needs no room under the topics' bytes.
_REDRIVE = _COUNT_BYTES + """
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
if tonumber(ARGV[5]) > 0 and redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[5]) then return -1 end
redis.call('ZREM', KEYS[1], ARGV[2])
count_bytes(ARGV[6], #ARGV[3] - redis.call('HSTRLEN', KEYS[2], ARGV[2]))
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
note_topic(ARGV[6], string.sub(KEYS[3], 1, -5))
if redis.call('RPUSH', ARGV[1] .. ARGV[4], ARGV[2]) == 1 then redis.call('RPUSH', KEYS[4], ARGV[4]) end
return 1
"""


SKIP_LOOK = PUT_OFF_LOOK
"""Ready lanes one claim moves past, to the tail (another engine serves their job's function and this one does not)
or put off (their function is missing here): a claim on a queue full of them costs a bounded look, the same bound
as the in-memory store's."""

PUT_OFF_KEPT_MS = 600_000
"""Life of an engine's hash of put-off functions in Redis after its last claim naming them: the hash of an engine
that stopped without a word goes with it."""

SKIP_BYTES = 256 * 1024
"""Job bytes one claim reads to look past lanes whose jobs it leaves to other engines (each read copies the whole
job): past them the claim ends and the next looks further, so a claim on a queue of large such jobs holds Redis for
a bounded time (one such job, and the job claimed, at most beyond it)."""

# The wanted pairs (a sorted set) after an add: the newest MAX_WANTED kept, the key for WANTED_KEPT_MS.
_KEEP_WANTED = """
local function keep_wanted(key)
  local extra = redis.call('ZCARD', key) - MAX_WANTED
  if extra > 0 then redis.call('ZREMRANGEBYRANK', key, 0, extra - 1) end
  redis.call('PEXPIRE', key, WANTED_KEPT_MS)
end
"""

# Engines sharing the store say which (named queue, function) pairs they can run (their workers serve the function
# and the engine consumes the queue), so an engine lacking a function leaves its jobs in a queue to one that runs them
# there instead of counting their attempts (and dead-lettering them) while it runs them nowhere. A pair is the JSON
# array [queue, function]. Three keys under the prefix, next to (never among) the queues' own ``queue:`` keys, each
# with a TTL so a store every engine left forgets them: ``queue-engines`` (sorted set "<its ttl ms>:<engine id>" ->
# until when it is live, Redis's clock: when it last read ``queue-wanted`` plus its own TTL, so engines with
# different TTLs judge each other by the other's), ``queue-wanted`` (sorted set pair -> when an engine first found it
# missing; the newest MAX_WANTED) and ``queue-served`` (sorted set pair -> until when an engine runs it). An engine
# that stops refreshing (it crashed) is forgotten once its own TTL has passed, and so are the pairs only it served.
# KEYS: engines, wanted, served · ARGV: engine member, pair · 1: another live engine runs the pair, 2: another live
# engine has not looked at the wanted pairs since this one was first wanted (it may run it), 0: none does (this
# engine's own grace applies)
_LOOKUP = _KEEP_WANTED + """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local first = redis.call('ZSCORE', KEYS[2], ARGV[2])
if first then
  first = tonumber(first)
else
  first = now
  redis.call('ZADD', KEYS[2], now, ARGV[2])
end
keep_wanted(KEYS[2])
local served = redis.call('ZSCORE', KEYS[3], ARGV[2])
if served and tonumber(served) > now then return 1 end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
for i = 1, #live, 2 do
  local ttl = tonumber(string.match(live[i], '^(%d+):'))
  if live[i] ~= ARGV[1] and ttl and tonumber(live[i + 1]) - ttl < first then return 2 end
end
return 0
"""

# KEYS: wanted · the time (Redis's clock) and the pairs wanted, newest first
_WANTED = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
return {now, redis.call('ZREVRANGE', KEYS[1], 0, MAX_WANTED - 1)}
"""

# A key's TTL is only ever raised: an engine with a short TTL must not expire what one with a longer TTL refreshes.
# The last ``waiting`` of the pairs left to others are pairs whose jobs this engine has its store put off (their
# function missing here): no longer claimed one by one, they are not looked up (and so wanted again) at each job;
# each refresh wants a window of them again, as the newest (the caller moves the window on at each refresh), so an
# engine whose worker registers such a function later sees it wanted and says it runs it (else the jobs waited out
# the grace: 37 s of a 40 s one).
# KEYS: engines, served, wanted · ARGV: engine member, when it read the wanted pairs, its ttl ms, count of pairs it
# runs, count of waiting pairs, the pairs it runs, then pairs it leaves to others · for each of the latter, 1 while
# another engine runs it
_ADVERTISE = _KEEP_WANTED + """
local read, ttl, count, waiting = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function keep(key)
  if redis.call('PTTL', key) < ttl * 2 then redis.call('PEXPIRE', key, ttl * 2) end
end
redis.call('ZADD', KEYS[1], read + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
keep(KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
for i = 6, 5 + count do
  local until_ms = redis.call('ZSCORE', KEYS[2], ARGV[i])
  if not until_ms or tonumber(until_ms) < read + ttl then redis.call('ZADD', KEYS[2], read + ttl, ARGV[i]) end
end
if count > 0 then keep(KEYS[2]) end
local still = {}
for i = 6 + count, #ARGV do
  local until_ms = redis.call('ZSCORE', KEYS[2], ARGV[i])
  still[#still + 1] = (until_ms and tonumber(until_ms) > now) and 1 or 0
end
if waiting > 0 then
  for i = #ARGV - waiting + 1, #ARGV do redis.call('ZADD', KEYS[3], now, ARGV[i]) end
  keep_wanted(KEYS[3])
end
return still
"""

MAX_WANTED = 256
"""Functions found missing the store remembers (the newest): what each engine reads at every refresh stays small
whatever the number of made-up functions enqueued."""

WANTED_KEPT_MS = 3_600_000
"""How long the wanted functions are kept once no engine finds one missing."""


def _pair(queue: str, function_id: str) -> str:
    return dumps([queue, function_id])


def _member(engine_id: str, ttl_ms: int) -> str:
    return f"{ttl_ms}:{engine_id}"  # _LOOKUP reads the TTL back: the engine's last read is its score less it


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Keys:
    def __init__(self, prefix: str, queue: str, counted: str = "") -> None:
        base = f"{prefix}queue:{escape_name(queue)}:"  # the lane, last in its key, needs no escaping
        self.counted = counted  # the topics' byte counter, for a topic's queue (else '')
        self.jobs = base + "jobs"
        self.ready = base + "ready"
        self.active = base + "active"
        self.delayed = base + "delayed"
        self.dlq = base + "dlq"
        self.dlq_entries = base + "dlq_entries"
        self.done = base + "done"
        self.lane = base + "lane:"
        self.put_off = base + "put_off:"  # + an engine's store id: its hash of put-off functions
        self.fifo = base + "fifo"  # "1" while the topic's subscriber asked for FIFO (see topic_fifo)


class RedisQueueStore:
    """:class:`~iii_engine.modules.queue.store.QueueStore` on Redis (``modules::queue::RedisAdapter``).

    Example:
        >>> RedisQueueStore.__name__
        'RedisQueueStore'
    """

    #: other engines share it: an idle queue is polled for their pushes (see ``idle_poll_max_ms``)
    shared: ClassVar[bool] = True

    def __init__(self, redis_url: str, *, key_prefix: str = "", done_kept_ms: int = DONE_KEPT_MS,
                 topics: TopicShare | None = None) -> None:
        # A blocking pool (50 connections, or the URL's ?max_connections=): callers beyond it wait for a connection
        # (30 s, or ?timeout=) where Redis.from_url's pool refused them at once, and 1,898 of 2,000 concurrent
        # enqueues failed with "Too many connections" without reaching Redis.
        self._redis: Redis = waiting_client(redis_url)
        self._prefix = key_prefix
        if not 1 <= done_kept_ms <= MAX_DONE_KEPT_MS:
            raise ValueError(f"done_kept_ms must be 1..{MAX_DONE_KEPT_MS}, got {done_kept_ms}")
        register = self._redis.register_script
        kept = str(done_kept_ms)
        self._push = register(_PUSH)
        self._finish, self._dead = register(_FINISH.replace("KEPT_MS", kept)), register(_DEAD.replace("KEPT_MS", kept))
        self._retry, self._release, self._recover = register(_RETRY), register(_RELEASE), register(_RECOVER)
        self._redrive, self._bring_forward = register(_REDRIVE), register(_BRING_FORWARD)
        self._discard = register(_DISCARD)
        # Its max_unsubscribed_bytes is not kept: engines sharing the store do not know each other's subscribers.
        self._topics = topics
        self._topic_bytes_key = key_prefix + TOPIC_BYTES_KEY
        self._topics_key = key_prefix + TOPICS_KEY
        self._recount = register(_RECOUNT)
        self._recount_after = 0.0  # loop time before which a refusal does not count again
        self._claim = register(_CLAIM.replace("SKIP_LOOK", str(SKIP_LOOK)).replace("SKIP_BYTES", str(SKIP_BYTES))
                               .replace("PUT_OFF_KEPT_MS", str(PUT_OFF_KEPT_MS)))
        wanted = str(MAX_WANTED)
        self._lookup = register(_LOOKUP.replace("MAX_WANTED", wanted).replace("WANTED_KEPT_MS", str(WANTED_KEPT_MS)))
        self._wanted = register(_WANTED.replace("MAX_WANTED", wanted))
        self._advertise = register(_ADVERTISE.replace("MAX_WANTED", wanted)
                                   .replace("WANTED_KEPT_MS", str(WANTED_KEPT_MS)))
        self._shared = (key_prefix + "queue-engines", key_prefix + "queue-wanted", key_prefix + "queue-served")
        self._id = uuid.uuid4().hex  # names this store's own put-off hashes apart from other engines'
        # Redis's clock less this process's monotonic one (ms, None: not read yet), the round trip that read it (ms),
        # when it was read (monotonic s) and the read under way: see _shift
        self._redis_less_mono: int | None = None
        self._clock_shift: int | None = None
        self._wall_less_mono = 0
        self._clock_trip_ms = 0
        self._clock_read_at = float("-inf")
        self._clock_read: asyncio.Task[None] | None = None

    async def prepare(self) -> None:
        """Check Redis answers (a ``PING`` within :data:`START_CHECK_S`), so a module on a Redis that is down fails its
        start in one line naming it instead of failing every enqueue; see :func:`iii_streams.redis.check_reachable`.

        Example:
            >>> import asyncio
            >>> async def down() -> None:
            ...     store = RedisQueueStore("redis://:secret@127.0.0.1:1/0")
            ...     try:
            ...         await store.prepare()
            ...     finally:
            ...         await store.close()
            >>> asyncio.run(down())  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            iii_streams.errors.StreamUnavailableError: Redis at redis://127.0.0.1:1/0 unreachable: Error 111 ...
        """
        await check_reachable(self._redis, timeout=START_CHECK_S)
        if self._topics is not None:
            await self.recount_topic_bytes()

    async def ping(self) -> None:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`: a ``PING`` (within :data:`START_CHECK_S`)."""
        await check_reachable(self._redis, timeout=START_CHECK_S)

    async def recount_topic_bytes(self) -> int:
        """Count the topic queues' bytes again (:data:`TOPIC_BYTES_KEY`) from the jobs and dead letters the queues
        listed in :data:`TOPICS_KEY` hold, in one script, and return the count: a counter left wrong (keys deleted by
        hand, an older engine's acks, the counter evicted) is right again. The script's work grows with the topic
        jobs and dead letters held (Redis is held 2.2 s for a million), so it runs when the store is prepared and
        before a refusal for ``max_topic_bytes``, at most every :data:`RECOUNT_EVERY_S` there."""
        return int(await self._recount(keys=[self._topic_bytes_key, self._topics_key]))

    def _k(self, queue: str) -> _Keys:
        topic = self._topics is not None and queue.startswith(self._topics.prefix)
        return _Keys(self._prefix, queue, self._topic_bytes_key if topic else "")

    async def topic_bytes(self) -> int:
        """Bytes of JSON the topic queues' jobs and dead letters take (:data:`TOPIC_BYTES_KEY`)."""
        return int(await self._redis.get(self._topic_bytes_key) or 0)

    def set_unsubscribed(self, queue: str, unsubscribed: bool) -> None:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`: nothing, as engines sharing the store do not
        know each other's subscribers (:attr:`TopicShare.max_bytes` bounds every topic's jobs together)."""

    async def push(self, queue: str, job: Job, *, max_jobs: int | None = None,
                   unsubscribed: bool | None = None) -> bool:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`: a topic's job past :attr:`TopicShare.max_bytes`
        (its JSON counted) raises :class:`~iii_engine.modules.queue.store.StoreFull`; ``unsubscribed`` is not kept."""
        k = self._k(queue)
        raw = job.to_json()
        limit = self._topics.max_bytes if k.counted and self._topics is not None else 0
        args: list[str | int] = [k.lane, job.id, raw, job.lane, max_jobs or 0, k.counted, limit]
        try:
            stored = await self._push(keys=[k.jobs, k.ready, k.dlq, k.done], args=args)
            # A refusal stored nothing: the counter may be wrong (see TOPIC_BYTES_KEY), so it is counted again, at
            # most every RECOUNT_EVERY_S, and the push tried once more.
            clock = asyncio.get_running_loop().time
            if isinstance(stored, list) and (began := clock()) >= self._recount_after:
                self._recount_after = began + RECOUNT_EVERY_S
                await self.recount_topic_bytes()
                self._recount_after = max(self._recount_after, began + 20 * (clock() - began))
                stored = await self._push(keys=[k.jobs, k.ready, k.dlq, k.done], args=args)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if sent_nothing(exc):
                raise NotSent(str(exc)) from exc
            raise
        if isinstance(stored, list):
            raise StoreFull(len(raw.encode()), int(stored[1]), limit, "topics")
        return bool(stored)

    async def _shift(self) -> int:
        """Redis's clock less this engine's wall clock now (ms): every time the store keeps (a lease's deadline, a
        due time, a look) is moved onto Redis's clock, so engines sharing the store agree on them whatever their own
        clocks say. Before, an engine whose clock ran 120 s ahead took another engine's running job for a lost
        engine's and ran it a second time at once.

        Redis's clock is read against this process's monotonic clock (every :data:`CLOCK_READ_S`, one read at a
        time for every caller), and the wall clock is read at each call: a step of the wall clock is followed at
        once (kept as an offset, a step made between two reads moved every time by its size until the next, and
        a forward step's maintenance recovered another engine's running job in that window). A read whose round
        trip took more than :data:`CLOCK_TRIP_MS` and twice the best kept (a wait for a connection, a Redis busy
        with a script) replaces the kept one only when that is :data:`CLOCK_KEPT_S` old: 5,000 claims at once read
        it 5,000 times and it ended 602 ms off."""
        if self._redis_less_mono is None or time.monotonic() - self._clock_read_at >= CLOCK_READ_S:
            read = self._clock_read
            if read is None or read.done():
                read = self._clock_read = asyncio.get_running_loop().create_task(self._read_clock())
            await asyncio.shield(read)
        assert self._redis_less_mono is not None
        # The wall clock's lead on the monotonic one, as it was when the shift was worked out: a change of it past
        # CLOCK_STEP_MS is a step of the wall clock, followed now (within it, the shift stays what it was, exact
        # to the millisecond from call to call)
        wall_less_mono = _engine_now_ms() - monotonic_ms()
        if self._clock_shift is None or abs(wall_less_mono - self._wall_less_mono) > CLOCK_STEP_MS:
            self._clock_shift = self._redis_less_mono - wall_less_mono
            self._wall_less_mono = wall_less_mono
        return self._clock_shift

    async def _read_clock(self) -> None:
        before = time.monotonic_ns()
        seconds, micros = await self._redis.time()
        after = time.monotonic_ns()
        trip_ms = (after - before) // 1_000_000
        at = time.monotonic()
        if (self._redis_less_mono is not None and trip_ms > max(CLOCK_TRIP_MS, 2 * self._clock_trip_ms)
                and at - self._clock_read_at < CLOCK_KEPT_S):
            return  # (read again at the next call past CLOCK_READ_S, the kept one standing meanwhile)
        self._redis_less_mono = int(seconds) * 1000 + int(micros) // 1000 - (before + after) // 2_000_000
        self._clock_trip_ms = trip_ms
        self._clock_read_at = at
        self._clock_shift = None  # worked out again from this read

    async def claim(self, queue: str, *, now_ms: int, lease_ms: int,
                    skip_functions: Collection[str] = ()) -> Job | None:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`; at most :data:`SKIP_LOOK` lanes are moved past
        per call (then ``None``, though other lanes may be ready: the next poll looks further)."""
        return (await self.claim_next(queue, now_ms=now_ms, lease_ms=lease_ms, skip_functions=skip_functions)).job

    async def claim_next(self, queue: str, *, now_ms: int, lease_ms: int, skip_functions: Collection[str] = (),
                         put_off: Mapping[str, int] | None = None) -> Claim:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`: one script call, whatever it looks past (at most
        :data:`SKIP_LOOK` lanes and :data:`SKIP_BYTES` of their jobs). The looks of ``put_off`` are kept in a hash of
        this store's own in Redis (expiring :data:`PUT_OFF_KEPT_MS` after its last claim): a
        :class:`~iii_engine.modules.queue.store.PutOff` sends its changes only, any other mapping replaces it."""
        k = self._k(queue)
        skipped = [dumps(function_id) for function_id in skip_functions]
        if isinstance(put_off, PutOff):
            replace, changes = False, put_off.take_changes()
        else:
            replace, changes = put_off is not None, dict(put_off or {})
        try:
            shift = await self._shift()
        except BaseException:
            if isinstance(put_off, PutOff):
                put_off.give_back(changes)
            raise
        args: list[str | int] = [k.lane, now_ms + shift, lease_ms, 1 if put_off else 0, 1 if replace else 0,
                                 len(skipped), *skipped]
        for function_id, look_ms in changes.items():
            args += (dumps(function_id), look_ms + shift if look_ms else 0)  # (0: no longer put off)
        try:
            keys = [k.jobs, k.ready, k.active, k.delayed, k.put_off + self._id]
            more, raw, due, *lanes = await self._claim(keys=keys, args=args)
        except BaseException:
            if isinstance(put_off, PutOff):
                put_off.give_back(changes)  # perhaps applied, perhaps not: applied twice is the same
            raise
        put = tuple((_text(lanes[at]), loads(lanes[at + 1]), int(lanes[at + 2]) - shift)
                    for at in range(0, len(lanes) - 2, 3))
        due_text = _text(due)
        due_known = due_text != ""
        due_ms = int(float(due_text)) - shift if due_known and due_text != "-1" else None
        return Claim(Job.from_json(raw) if raw else None, put, bool(int(more)), due_ms, due_known)

    async def ack(self, queue: str, job: Job) -> None:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`."""
        k = self._k(queue)
        await self._finish(keys=[k.jobs, k.ready, k.active, k.delayed], args=[k.lane, job.lane, job.id, k.counted])

    async def retry(self, queue: str, job: Job, *, due_ms: int) -> None:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`."""
        k = self._k(queue)
        await self._retry(keys=[k.jobs, k.active, k.delayed],
                          args=[k.lane, job.lane, job.id, job.to_json(), due_ms + await self._shift(), k.counted])

    async def dead(self, queue: str, letter: DeadLetter) -> None:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`."""
        k = self._k(queue)
        job = letter.job
        await self._dead(keys=[k.jobs, k.ready, k.active, k.delayed, k.dlq, k.dlq_entries],
                         args=[k.lane, job.lane, job.id, letter.failed_at, _dump(letter), k.counted])

    async def release(self, queue: str, job: Job) -> None:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`."""
        k = self._k(queue)
        await self._release(keys=[k.ready, k.active], args=[k.lane, job.lane, job.id])

    async def renew(self, queue: str, lanes: list[str], *, deadline_ms: int) -> None:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`."""
        if lanes:
            deadline = deadline_ms + await self._shift()
            await self._redis.zadd(self._k(queue).active, dict.fromkeys(lanes, deadline), xx=True)

    async def recover(self, queue: str, *, now_ms: int) -> int:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`."""
        k = self._k(queue)
        return int(await self._recover(keys=[k.ready, k.active], args=[now_ms + await self._shift()]))

    async def next_due_ms(self, queue: str) -> int | None:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`."""
        first = await self._redis.zrange(self._k(queue).delayed, 0, 0, withscores=True)
        return int(first[0][1]) - await self._shift() if first else None

    async def bring_forward(self, queue: str, lanes: list[str], *, due_ms: int) -> int:
        """See :class:`~iii_engine.modules.queue.store.QueueStore` (its example, on the in-memory store, holds here:
        this one needs a Redis server to run). ``lanes`` go to Redis in batches of ``BRING_FORWARD_BATCH``."""
        delayed, moved = self._k(queue).delayed, 0
        due_ms += await self._shift()
        for start in range(0, len(lanes), BRING_FORWARD_BATCH):
            moved += int(await self._bring_forward(keys=[delayed],
                                                   args=[due_ms, *lanes[start:start + BRING_FORWARD_BATCH]]))
        return moved

    async def counts(self, queue: str) -> QueueCounts:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`."""
        k = self._k(queue)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hlen(k.jobs)
            pipe.zcard(k.active)
            pipe.zcard(k.delayed)
            pipe.zcard(k.dlq)
            jobs, active, delayed, dlq = await pipe.execute()
        return QueueCounts(int(jobs) - int(active) - int(delayed), int(active), int(delayed), int(dlq))

    async def dlq_page(self, queue: str, offset: int, limit: int) -> list[DeadLetter]:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`."""
        if limit <= 0:
            return []
        k = self._k(queue)
        ids = [_text(i) for i in await self._redis.zrange(k.dlq, offset, offset + limit - 1)]
        if not ids:
            return []
        raws = await self._redis.hmget(k.dlq_entries, ids)
        return [_load(raw) for raw in raws if raw is not None]

    async def redrive(self, queue: str, job_id: str | None, *, max_jobs: int | None = None) -> int:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`."""
        k = self._k(queue)
        ids = [job_id] if job_id is not None else [_text(i) for i in await self._redis.zrange(k.dlq, 0, -1)]
        moved = 0
        for one in ids:
            raw = await self._redis.hget(k.dlq_entries, one)
            if raw is None:
                continue
            job = _load(raw).job.restarted()
            outcome = int(
                await self._redrive(
                    keys=[k.dlq, k.dlq_entries, k.jobs, k.ready],
                    args=[k.lane, job.id, job.to_json(), job.lane, max_jobs or 0, k.counted],
                )
            )
            if outcome < 0:
                raise QueueFull(moved)
            moved += outcome
        return moved

    async def discard(self, queue: str, job_id: str) -> int:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`."""
        k = self._k(queue)
        return int(await self._discard(keys=[k.dlq, k.dlq_entries], args=[job_id, k.counted]))

    async def forget(self, queue: str) -> None:
        """See :class:`~iii_engine.modules.queue.store.QueueStore`: nothing to do, Redis drops an empty key (a
        topic's FIFO mark stays: see :meth:`set_topic_fifo`)."""

    async def set_topic_fifo(self, queue: str, fifo: bool) -> None:
        """Keep whether topic ``queue``'s subscriber asked for FIFO (``<queue's keys>:fifo``), for an engine that
        makes the topic by an enqueue before any subscriber registers on it (restarted, or sharing the store with
        the subscriber's engine) to stamp its jobs with the FIFO lane: with the type in one engine's memory alone,
        6 jobs enqueued to a FIFO topic at concurrency 1 ran all at once. A standard subscriber takes the mark away;
        one key per topic a FIFO trigger ever subscribed to."""
        k = self._k(queue)
        if fifo:
            await self._redis.set(k.fifo, "1")
        else:
            await self._redis.delete(k.fifo)

    async def topic_fifo(self, queue: str) -> bool | None:
        """Whether topic ``queue``'s subscriber asked for FIFO: the store is shared, so its answer is known either
        way (no key: none did, or a standard subscriber took the type back)."""
        return bool(await self._redis.exists(self._k(queue).fifo))

    async def served_elsewhere(self, engine_id: str, ttl_ms: int, queue: str, function_id: str) -> int:
        """Whether another engine sharing the store runs ``function_id``'s jobs in ``queue`` (engine ``engine_id``,
        live for ``ttl_ms`` at each :meth:`advertise`, lacks the function): ``1`` yes, ``2`` not known yet (a live
        engine has not looked since the pair was first wanted), ``0`` no. The pair is recorded as wanted, so the
        engines that run it say so at their next :meth:`advertise`."""
        return int(await self._lookup(keys=list(self._shared),
                                      args=[_member(engine_id, ttl_ms), _pair(queue, function_id)]))

    async def wanted(self) -> tuple[int, list[tuple[str, str]]]:
        """Redis's clock (ms) and the (queue, function) pairs engines found missing (the newest :data:`MAX_WANTED`;
        an entry that is no such pair is left out)."""
        now, names = await self._wanted(keys=[self._shared[1]])
        pairs = []
        for name in names:
            try:
                queue, function_id = loads(_text(name))
            except (ValueError, TypeError):
                continue
            if isinstance(queue, str) and isinstance(function_id, str):
                pairs.append((queue, function_id))
        return int(now), pairs

    async def advertise(self, engine_id: str, read_ms: int, serves: list[tuple[str, str]],
                        left: list[tuple[str, str]], *, ttl_ms: int, waiting: int = 0) -> list[bool]:
        """Engine ``engine_id`` read the wanted pairs at ``read_ms`` (Redis's clock), is live and runs the (queue,
        function) pairs ``serves`` until ``ttl_ms`` past it unless it says so again; for each of ``left`` (pairs it
        leaves to other engines), whether one still runs it. The last ``waiting`` of ``left`` are pairs it waits for
        (it lacks the function and no engine was known to run it): wanted again if they were left out."""
        engines, wanted, served = self._shared
        still = await self._advertise(keys=[engines, served, wanted],
                                      args=[_member(engine_id, ttl_ms), read_ms, ttl_ms, len(serves), waiting,
                                            *(_pair(*pair) for pair in serves), *(_pair(*pair) for pair in left)])
        return [bool(int(flag)) for flag in still]

    async def leave(self, engine_id: str, ttl_ms: int) -> None:
        """Engine ``engine_id`` stops: it no longer counts as live (the pairs it advertised expire with its TTL)."""
        await self._redis.zrem(self._shared[0], _member(engine_id, ttl_ms))

    async def eviction_policy(self) -> str | None:
        """Redis's ``maxmemory-policy`` when it may evict keys (anything but ``noeviction``), else ``None``; also
        ``None`` when Redis does not answer within :data:`EVICTION_CHECK_S` or refuses ``CONFIG`` (managed
        services often rename it), so the check never holds up or stops a start."""
        try:
            async with asyncio.timeout(EVICTION_CHECK_S):
                answer = await self._redis.config_get("maxmemory-policy")
        except Exception as exc:  # a Redis that is down is met again, and reported, by the consumers
            log.debug("queue store: could not read Redis's maxmemory-policy: %s", exc)
            return None
        raw: dict[Any, Any] = dict(answer)
        policy = raw.get(b"maxmemory-policy", raw.get("maxmemory-policy"))
        if isinstance(policy, bytes):
            policy = policy.decode()
        return policy if isinstance(policy, str) and policy != "noeviction" else None

    async def persistence_gap(self) -> str | None:
        """What a Redis crash or restart would lose of the queued jobs, as a warning's words, or ``None`` when Redis
        keeps an append-only file (``appendonly yes``: a killed Redis loses nothing, a host's crash at most the last
        ``appendfsync`` interval). ``None`` too when Redis does not answer within :data:`EVICTION_CHECK_S` or refuses
        ``CONFIG``, as :meth:`eviction_policy`.

        Without the file, a restart loses every job (no ``save`` either), or those enqueued since the last snapshot
        (``save`` rules only: a Redis killed a minute after 50 enqueues had 49 of them gone, and nothing said so)."""
        try:
            async with asyncio.timeout(EVICTION_CHECK_S):
                answer = await self._redis.config_get("appendonly")
                answer.update(await self._redis.config_get("save"))
        except Exception as exc:  # a Redis that is down is met again, and reported, by the consumers
            log.debug("queue store: could not read Redis's persistence settings: %s", exc)
            return None
        raw = {_text(key): _text(value) for key, value in dict(answer).items()}
        if raw.get("appendonly") != "no" or "save" not in raw:
            return None
        save = raw["save"]
        if not save:
            return ("Redis keeps nothing on disk (appendonly no, save ''): a restart of Redis loses every queued job "
                    "silently; turn on appendonly yes (RDB snapshots alone lose the jobs since the last one)")
        return (f"Redis keeps queued jobs on disk only in its snapshots (appendonly no, save {save!r:.100}): a crash "
                "or kill of Redis loses the jobs enqueued since its last snapshot silently; turn on appendonly yes")

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()


def _dump(letter: DeadLetter) -> str:
    return dumps(letter.as_dict())


def _load(raw: str | bytes) -> DeadLetter:
    d = loads(raw)
    return DeadLetter(Job.from_dict(d["job"]), d["error"], d["failed_at"])
