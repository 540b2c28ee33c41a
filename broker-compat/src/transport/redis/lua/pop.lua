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

local max = tonumber(ARGV[1])
local lists = #KEYS - 2
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local out = {}

local function pop_one()
  for i = 3, #KEYS do
    local env = redis.call('RPOP', KEYS[i])
    if env then
      local exchange, rk, tag = '', ARGV[i - 1], ARGV[lists + 2 + #out]
      local ok, m = pcall(cjson.decode, env)
      if ok and type(m) == 'table' and type(m.properties) == 'table' then
        local p = m.properties
        if type(p.delivery_tag) == 'string' then tag = p.delivery_tag end
        if type(p.delivery_info) == 'table' then
          if type(p.delivery_info.exchange) == 'string' then exchange = p.delivery_info.exchange end
          if type(p.delivery_info.routing_key) == 'string' then rk = p.delivery_info.routing_key end
        end
      end
      redis.call('ZADD', KEYS[1], now, tag)
      redis.call('HSET', KEYS[2], tag, '[' .. env .. ', ' .. pystr(exchange) .. ', ' .. pystr(rk) .. ']')
      out[#out + 1] = {i - 2, env, tag}
      return true
    end
  end
  return false
end

while #out < max and pop_one() do end
return out
