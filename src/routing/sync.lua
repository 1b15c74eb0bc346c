-- tollgate routing state, v1: state every replica shares, one hash per kind
-- (cooldowns, headroom views), each field an upstream and model.
--
-- KEYS[1]: the hash. ARGV[1]: now, Unix ms. Then pairs: field, value. A value is
-- "<stamp>|<expires ms>|<payload>": a field is replaced only by a value with a larger
-- stamp (a cooldown's end, a view's observation time), so replicas writing at once
-- keep the latest, and fields past their expiry are deleted as they are read.
--
-- Returns every live field and value, flat: what this replica learns from the others.

local now = tonumber(ARGV[1])
local function stamp(value)
  return tonumber(string.match(value, '^(%-?%d+)|'))
end

for i = 2, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', KEYS[1], field)
  local new_stamp = stamp(value)
  if new_stamp and (not old or not stamp(old) or new_stamp > stamp(old)) then
    redis.call('HSET', KEYS[1], field, value)
  end
end
if #ARGV > 1 then
  -- A deployment that stops routing leaves nothing behind for long.
  redis.call('PEXPIRE', KEYS[1], 86400000)
end

local all = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #all, 2 do
  local expires = tonumber(string.match(all[i + 1], '^%-?%d+|(%-?%d+)|'))
  if expires and expires > now then
    live[#live + 1] = all[i]
    live[#live + 1] = all[i + 1]
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return live
