-- Atomic pop + unacked bookkeeping (kombu's BRPOP followed by
-- ZADD unacked_index / HSET unacked, in one step so a crash in between
-- cannot lose the message).
-- KEYS[1] = unacked_index, KEYS[2] = unacked, KEYS[3..] = priority lists in
-- consumption order (step-major).
-- ARGV[1] = how many messages to pop at most (the free prefetch slots),
-- ARGV[2..#KEYS-1] = queue name of KEYS[i] as ARGV[i-1] (routing key recorded
-- when the envelope carries no delivery_info), then one fallback delivery
-- tag per message.
-- Returns a list of {index of the list popped (1-based among the lists),
-- envelope, tag}, empty when every list is empty. Each message is taken from
-- the first non-empty list, so priority order holds within a batch.

-- Python json.dumps (ensure_ascii) of a string, so the unacked value is
-- byte-identical to kombu's dumps([envelope, exchange, routing_key]).
local short = {[8] = '\\b', [9] = '\\t', [10] = '\\n', [12] = '\\f', [13] = '\\r',
               [34] = '\\"', [92] = '\\\\'}
local function pystr(s)
  -- Printable ASCII without '"' or '\\' (every name we see) is its own escape.
  if not s:find('[^ !#-%[%]-~]') then
    return '"' .. s .. '"'
  end
  local out, i, n = {'"'}, 1, #s
  while i <= n do
    local c = s:byte(i)
    local cp, len = c, 1
    if c >= 0xF0 then
      cp = (c % 8) * 262144 + ((s:byte(i + 1) or 0) % 64) * 4096
        + ((s:byte(i + 2) or 0) % 64) * 64 + (s:byte(i + 3) or 0) % 64
      len = 4
    elseif c >= 0xE0 then
      cp = (c % 16) * 4096 + ((s:byte(i + 1) or 0) % 64) * 64 + (s:byte(i + 2) or 0) % 64
      len = 3
    elseif c >= 0xC0 then
      cp = (c % 32) * 64 + (s:byte(i + 1) or 0) % 64
      len = 2
    end
    if short[cp] then
      out[#out + 1] = short[cp]
    elseif cp >= 0x10000 then
      local v = cp - 0x10000
      out[#out + 1] = string.format('\\u%04x\\u%04x', 0xD800 + math.floor(v / 1024), 0xDC00 + v % 1024)
    elseif cp < 0x20 or cp > 0x7E then
      out[#out + 1] = string.format('\\u%04x', cp)
    else
      out[#out + 1] = string.char(cp)
    end
    i = i + len
  end
  out[#out + 1] = '"'
  return table.concat(out)
end

-- The envelope's `properties`. kombu (and we) write it as the last key, so
-- decoding only the text after its last `"properties": ` (minus the
-- envelope's closing brace) skips the body and headers. Inside a JSON
-- string that text would read `\"properties\": `, so it cannot match
-- there; a nested key of that name leaves unbalanced braces and fails to
-- decode, and then (or when `properties` is not last) the whole envelope
-- is decoded as before.
local function properties(env)
  local at, from = nil, 1
  while true do
    local i, j = env:find('"properties": ', from, true)
    if not i then break end
    at, from = j + 1, j + 1
  end
  if at then
    local ok, p = pcall(cjson.decode, env:sub(at, -2))
    if ok and type(p) == 'table' then return p end
  end
  local ok, m = pcall(cjson.decode, env)
  if ok and type(m) == 'table' and type(m.properties) == 'table' then
    return m.properties
  end
  return nil
end

-- A batch mostly repeats one exchange and one routing key: quote each once.
local quoted = {}
local function pyq(s)
  local q = quoted[s]
  if not q then
    q = pystr(s)
    quoted[s] = q
  end
  return q
end

local max = tonumber(ARGV[1])
local lists = #KEYS - 2
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local out = {}

-- Up to n envelopes from one list: RPOP with a count (Redis >= 6.2), or one
-- at a time on older servers, which reject the count.
local function rpop(key, n)
  local r = redis.pcall('RPOP', key, n)
  if type(r) == 'table' and r.err then
    r = {}
    for _ = 1, n do
      local env = redis.call('RPOP', key)
      if not env then break end
      r[#r + 1] = env
    end
  end
  return r or {}
end

-- Every list in priority order, until `max` messages are taken.
local zadd, hset = {}, {}
for i = 3, #KEYS do
  if #out >= max then break end
  for _, env in ipairs(rpop(KEYS[i], max - #out)) do
    local exchange, rk, tag = '', ARGV[i - 1], ARGV[lists + 2 + #out]
    local p = properties(env)
    if p then
      if type(p.delivery_tag) == 'string' then tag = p.delivery_tag end
      if type(p.delivery_info) == 'table' then
        if type(p.delivery_info.exchange) == 'string' then exchange = p.delivery_info.exchange end
        if type(p.delivery_info.routing_key) == 'string' then rk = p.delivery_info.routing_key end
      end
    end
    zadd[#zadd + 1] = now
    zadd[#zadd + 1] = tag
    hset[#hset + 1] = tag
    hset[#hset + 1] = '[' .. env .. ', ' .. pyq(exchange) .. ', ' .. pyq(rk) .. ']'
    out[#out + 1] = {i - 2, env, tag}
  end
end
-- One ZADD and one HSET for the batch: the same entries kombu writes per
-- message, at a fraction of the per-call cost.
if #out > 0 then
  redis.call('ZADD', KEYS[1], unpack(zadd))
  redis.call('HSET', KEYS[2], unpack(hset))
end
return out
