"""The Lua scripts of the redis_stream source: the server does the per-entry work, so the client reads one
reply per chunk instead of parsing a reply line per entry in Python (about 2x the entries per second of a
redis-py ``XREADGROUP`` loop). Imported only by the redis tools."""

# KEYS[1] stream; ARGV: group, consumer, count, start id ('>' or a pending cursor), field, floor id ('' for
# none). Entries at or before the floor were committed by an earlier run: acknowledged here and left out.
# Returns {entries read, last id read, good ids joined by ' ', their payloads joined by '\n', ids without
# the field}.
READ = """
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], ARGV[4])
local entries = (r and r[1] and r[1][2]) or {}
local f, floor = ARGV[5], ARGV[6]
local fms, fseq = -1, -1
if floor ~= '' then
  local a, b = string.match(floor, '^(%d+)-(%d+)$')
  fms, fseq = tonumber(a), tonumber(b)
end
local ids, data, bad, done = {}, {}, {}, {}
local last = ''
local n = 0
for _, e in ipairs(entries) do
  local id = e[1]
  last = id
  local old = false
  if fms >= 0 then
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    ms, seq = tonumber(ms), tonumber(seq)
    old = ms < fms or (ms == fms and seq <= fseq)
  end
  if old then
    done[#done + 1] = id
  else
    local v = nil
    local fv = e[2]
    if fv then
      if fv[1] == f then v = fv[2]
      else for j = 3, #fv, 2 do if fv[j] == f then v = fv[j + 1] break end end end
    end
    if v == nil then
      bad[#bad + 1] = id
    else
      n = n + 1
      ids[n] = id
      data[n] = v
    end
  end
  if #done >= 5000 then
    redis.call('XACK', KEYS[1], ARGV[1], unpack(done))
    done = {}
  end
end
if #done > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(done)) end
return {#entries, last, table.concat(ids, ' '), table.concat(data, '\\n'), bad}
"""

# KEYS[1] stream; ARGV: group, consumer, last id. Acknowledges this consumer's pending entries up to the id
# (what it read, in order, up to a committed mark); returns how many.
ACK_UPTO = """
local total = 0
while true do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', ARGV[3], 5000, ARGV[2])
  if #p == 0 then break end
  local ids = {}
  for i, e in ipairs(p) do ids[i] = e[1] end
  total = total + redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
  if #p < 5000 then break end
end
return total
"""
