-- tollgate GCRA, v1: every bucket of one request in one atomic call, the same
-- arithmetic as the local buckets (src/limits/local.rs), in microseconds.
--
-- KEYS: one per bucket. ARGV[1]: mode, `charge` (all or nothing), `force` (charge past
-- the limit: the reconciliation debt) or `refund`. ARGV[2]: now in microseconds, or ""
-- for Redis's own TIME (what production uses, so replicas with skewed clocks agree).
-- Then three per bucket: limit, window in microseconds, units.
--
-- A bucket's value is its theoretical arrival time (TAT). A missing key is a full
-- bucket. `now` is only ever compared with the TAT, never stored alone, so a clock
-- stepped back makes every bucket look busier: it never grants a burst.
--
-- `charge` returns {refused (1-based index, 0: none), wait in µs (-1: no wait makes
-- room), used units of the refused bucket, then per bucket: remaining, reset in µs}.

-- Float slack, in µs: unit costs are window / limit, rarely exact, and a TAT near
-- 1.7e15 µs is stored to a quarter of a microsecond.
local SLACK = 1

local now = tonumber(ARGV[2])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end

local buckets = {}
for i, key in ipairs(KEYS) do
  local at = 3 + (i - 1) * 3
  local limit = tonumber(ARGV[at])
  local window = tonumber(ARGV[at + 1])
  local stored = redis.call('GET', key)
  buckets[i] = {
    key = key,
    limit = limit,
    window = window,
    n = tonumber(ARGV[at + 2]),
    per = window / math.max(limit, 1),
    tat = stored and tonumber(stored) or nil,
  }
end

local function busy(b)
  if not b.tat then return 0 end
  return math.max(b.tat - now, 0)
end

-- Stored until one window past the time the bucket is full again.
local function store(b, tat)
  b.tat = tat
  local ttl = math.ceil((math.max(tat - now, 0) + b.window) / 1000)
  redis.call('SET', b.key, string.format('%.17g', tat), 'PX', ttl)
end

local mode = ARGV[1]
if mode == 'force' then
  for _, b in ipairs(buckets) do
    if b.limit > 0 and b.n > 0 then
      store(b, math.max(b.tat or now, now) + b.n * b.per)
    end
  end
  return 0
elseif mode == 'refund' then
  for _, b in ipairs(buckets) do
    if b.tat and b.n > 0 then
      store(b, math.max(b.tat - b.n * b.per, now))
    end
  end
  return 0
end

local refused, wait, used = 0, 0, 0
for i, b in ipairs(buckets) do
  -- A limit of 0 refuses everything, even a charge of nothing.
  if b.limit == 0 or b.n > b.limit then
    refused, wait = i, -1
  elseif b.n > 0 then
    local after = busy(b) + b.n * b.per
    if after > b.window + SLACK then
      refused, wait = i, math.ceil(after - b.window)
    end
  end
  if refused > 0 then
    used = b.limit == 0 and 0 or math.ceil(math.max(busy(b) - SLACK, 0) / b.per)
    break
  end
end
if refused == 0 then
  for _, b in ipairs(buckets) do
    if b.n > 0 then
      store(b, math.max(b.tat or now, now) + b.n * b.per)
    end
  end
end

local result = {refused, wait, used}
for _, b in ipairs(buckets) do
  local remaining = 0
  if b.limit > 0 then
    remaining = math.max(math.floor((b.window - busy(b) + SLACK) / b.per), 0)
  end
  table.insert(result, remaining)
  table.insert(result, math.ceil(busy(b)))
end
return result
