-- gwc's quota and budget counters in Redis: one script, one round trip per call.
--
-- MemoryCounters (memory_counters.py) is the reference; every step here is
-- its step, with the float operations in the same order, so both give the
-- same answers. A call carries several operations (admit, settle, share),
-- run in order, each as if called alone: the client gathers what its callers
-- ask at the same time into one round trip (see redis_counters.py). Keys come
-- from the client, all under one hash tag. Numbers travel as strings written
-- with %.17g, which read back exactly.
--
-- An operation's numbers travel in one argument, its header, separated by
-- spaces: the client encodes and parses one value where it would do sixty
-- (which cost it more than the rest of its work). The header starts with the
-- operation, how many keys it uses, how many arguments follow it (subjects,
-- which can hold any byte, each travel on their own) and its `now`; so the
-- script finds each operation's keys and arguments without running the ones
-- before it. The answer is one string per operation, in order; '!' and the
-- error when one failed (the others still count).

local now

local function fmt(x)
  return string.format('%.17g', x)
end

-- Keep a key at least `seconds` more (keys hold leases and windows that end).
local function extend(key, seconds)
  local ms = math.ceil(seconds * 1000) + 1000
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end

-- Leases: a zset of "rid|amount" by expiry, their running total in a hash field.
local function live(hkey, field, zkey)
  local total = tonumber(redis.call('HGET', hkey, field) or '0')
  local expired = redis.call('ZRANGEBYSCORE', zkey, '-inf', now)
  for _, member in ipairs(expired) do
    total = total - tonumber(string.match(member, '|(.*)$'))
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
    if redis.call('ZCARD', zkey) == 0 then
      total = 0
    end
    redis.call('HSET', hkey, field, fmt(total))
  end
  return total
end

local function free(hkey, field, zkey, member)
  if redis.call('ZREM', zkey, member) == 1 then
    local total = tonumber(redis.call('HGET', hkey, field) or '0')
    total = total - tonumber(string.match(member, '|(.*)$'))
    if redis.call('ZCARD', zkey) == 0 then
      total = 0
    end
    redis.call('HSET', hkey, field, fmt(total))
  end
end

-- The space-separated fields of one argument.
local function fields(text)
  local out = {}
  for word in string.gmatch(text, '%S+') do
    out[#out + 1] = word
  end
  return out
end

local function gcra(window, limit, burst, cost)
  local step = math.max(1, math.floor(window * 1e6 / limit + 0.5))
  return step, math.floor(burst * step + 0.5), math.floor(cost * step + 0.5),
    math.floor(now * 1e6 + 0.5)
end

-- A tokens window's live buckets (older ones deleted), sorted, and their sum.
local function window(key, width, buckets)
  local low = math.floor(now / width) - buckets
  local raw = redis.call('HGETALL', key)
  local order, amounts = {}, {}
  for j = 1, #raw, 2 do
    local bucket = tonumber(raw[j])
    if bucket < low then
      redis.call('HDEL', key, raw[j])
    else
      table.insert(order, bucket)
      amounts[bucket] = tonumber(raw[j + 1])
    end
  end
  table.sort(order)
  return order, amounts
end

local function sum(order, amounts)
  local total = 0
  for _, bucket in ipairs(order) do
    total = total + amounts[bucket]
  end
  return total
end

-- admit: the header holds admit, keys, m subjects, now, lease, rid, n limits,
-- slack, buckets, concurrency retry; then 9 per limit: kind, limit, window,
-- burst, enforce, cost, subject index (0: none), period end, period expiry;
-- then 2 per subject: cap, till. The m arguments after it: the subjects.
-- KEYS from k + 1: 1 per requests or tokens limit, 2 per concurrency or budget
-- limit, then 1 per subject. Answers 2 + 7 per limit fields in one string
-- ('-' for an empty one).
local function admit(f, k, a)
  local lease, rid, n, m = tonumber(f[5]), f[6], tonumber(f[7]), tonumber(f[3])
  local slack, buckets, retry_slot = tonumber(f[8]), tonumber(f[9]), tonumber(f[10])
  local limits = {}
  for i = 1, n do
    local base = 10 + (i - 1) * 9
    local l = {kind = f[base + 1], limit = tonumber(f[base + 2]),
      window = tonumber(f[base + 3]), burst = tonumber(f[base + 4]), enforce = f[base + 5] == '1',
      coststr = f[base + 6], cost = tonumber(f[base + 6]), place = tonumber(f[base + 7]),
      ends = tonumber(f[base + 8]), expires = tonumber(f[base + 9]), reason = 'limit'}
    k = k + 1
    l.k1 = KEYS[k]
    if l.kind == 'concurrency' or l.kind == 'budget' then
      k = k + 1
    end
    l.k2 = KEYS[k]
    limits[i] = l
  end
  local places = {}
  for j = 1, m do
    local base, key = 10 + n * 9 + (j - 1) * 2, KEYS[k + j]
    local cap, subject, till = tonumber(f[base + 1]), ARGV[a + j], tonumber(f[base + 2])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local ok = redis.call('ZSCORE', key, subject) or redis.call('ZCARD', key) < cap
    local retry = 0
    if not ok then
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      retry = (tonumber(first[2]) or till) - now
    end
    places[j] = {ok = ok, retry = retry, till = till, key = key, subject = subject}
  end
  local refused = -1
  for i = 1, n do
    local l = limits[i]
    local lim = l.limit + slack * l.limit
    if l.kind == 'requests' then
      local step, capacity, cost, now_us = gcra(l.window, l.limit, l.burst, l.cost)
      l.step, l.capacity, l.units, l.now_us = step, capacity, cost, now_us
      l.tat = math.max(tonumber(redis.call('GET', l.k1) or now_us), now_us)
      local allow_at = l.tat + cost - capacity
      l.allowed, l.retry = allow_at <= now_us, math.max(0, allow_at - now_us) / 1e6
    elseif l.kind == 'tokens' then
      l.width = l.window / buckets
      l.order, l.amounts = window(l.k1, l.width, buckets)
      local total = sum(l.order, l.amounts)
      l.allowed, l.retry = total + l.cost <= lim, 0
      if not l.allowed then
        l.retry = l.window
        if l.cost <= lim then
          local fallen = 0
          for _, bucket in ipairs(l.order) do
            fallen = fallen + l.amounts[bucket]
            if total - fallen + l.cost <= lim then
              l.retry = (bucket + buckets + 1) * l.width - now
              break
            end
          end
        end
      end
    elseif l.kind == 'concurrency' then
      l.held = live(l.k1, 'held', l.k2)
      l.allowed, l.retry = l.held + l.cost <= lim, retry_slot
    else
      l.spent = tonumber(redis.call('HGET', l.k1, 'spent') or '0')
      l.reserved = live(l.k1, 'reserved', l.k2)
      l.allowed, l.retry = l.spent + l.reserved + l.cost <= lim, l.ends - now
    end
    if l.place > 0 and not places[l.place].ok then
      l.allowed, l.retry, l.reason = false, places[l.place].retry, 'subjects'
    end
    if l.enforce and not l.allowed and refused < 0 then
      refused = i - 1
    end
  end
  local admitted = refused < 0
  local out = {admitted and 1 or 0, refused}
  for i = 1, n do
    local l = limits[i]
    local taken = admitted and (l.enforce or l.allowed or l.kind == 'budget')
    local remaining, reset, share = 0, 0, '-'
    if l.kind == 'requests' then
      local step, capacity, cost, now_us = l.step, l.capacity, l.units, l.now_us
      local tat = l.tat  -- read by the first pass: no counter comes twice in one admission
      if taken then
        tat = tat + cost
        redis.call('SET', l.k1, fmt(tat), 'PX', math.ceil((tat - now_us) / 1000) + 1000)
      end
      local ahead = tat - now_us
      remaining, reset = math.max(0, math.floor((capacity - ahead) / step)), ahead / 1e6
    elseif l.kind == 'tokens' then
      local current = math.floor(now / l.width)
      if taken and l.cost > 0 then
        if l.amounts[current] == nil then
          table.insert(l.order, current)
          table.sort(l.order)  -- a replica's clock behind another's may have written later buckets
          l.amounts[current] = 0
        end
        l.amounts[current] = l.amounts[current] + l.cost
        -- a bucket that was there already made the key last as long as it needs
        if redis.call('HSET', l.k1, fmt(current), fmt(l.amounts[current])) == 1 then
          extend(l.k1, (current + buckets + 1) * l.width - now)
        end
      end
      remaining = math.max(0, l.limit - sum(l.order, l.amounts))
      if #l.order > 0 then
        reset = (l.order[#l.order] + buckets + 1) * l.width - now
      end
    elseif l.kind == 'concurrency' then
      if taken then
        l.held = l.held + l.cost
        redis.call('HSET', l.k1, 'held', fmt(l.held))
        redis.call('ZADD', l.k2, now + lease, rid .. '|' .. l.coststr)
        extend(l.k1, lease)
        extend(l.k2, lease)
      end
      remaining = math.max(0, l.limit - l.held)
      local last = redis.call('ZRANGE', l.k2, -1, -1, 'WITHSCORES')
      if #last > 0 then
        reset = tonumber(last[2]) - now
      end
    else
      if taken then
        l.reserved = l.reserved + l.cost
        -- the period's expiry is fixed: given when the field first came
        if redis.call('HSET', l.k1, 'reserved', fmt(l.reserved)) == 1 then
          extend(l.k1, l.expires - now)
        end
        redis.call('ZADD', l.k2, now + lease, rid .. '|' .. l.coststr)
        extend(l.k2, l.expires - now)
      end
      local used = l.spent + l.reserved
      remaining, reset, share = math.max(0, l.limit - used), l.ends - now, fmt(used / l.limit)
    end
    local w = #out
    if l.allowed then
      out[w + 1], out[w + 5], out[w + 7] = 1, '0', '-'
    else
      out[w + 1], out[w + 5], out[w + 7] = 0, fmt(l.retry), l.reason
    end
    out[w + 2], out[w + 3], out[w + 4], out[w + 6] = taken and 1 or 0, fmt(remaining),
      fmt(reset), share
  end
  if admitted then
    for j = 1, m do
      local p = places[j]
      if p.ok then
        local held = tonumber(redis.call('ZSCORE', p.key, p.subject) or p.till)
        redis.call('ZADD', p.key, math.max(held, p.till), p.subject)
        local last = redis.call('ZRANGE', p.key, -1, -1, 'WITHSCORES')
        extend(p.key, tonumber(last[2]) - now)
      end
    end
  end
  return table.concat(out, ' ')
end

-- settle, one reservation: the header holds settle, keys, 0, now, rid,
-- buckets; then 5 per item: kind, amount, bucket (tokens), window (tokens) or
-- period expiry (budgets), actual. KEYS from k + 1, in the same order: 1 per
-- tokens item, 2 per concurrency or budget item. Answers ''.
local function settle(f, k)
  local rid, buckets = f[5], tonumber(f[6])
  for i = 1, (#f - 6) / 5 do
    local base = 6 + (i - 1) * 5
    local kind, amountstr, actual = f[base + 1], f[base + 2], tonumber(f[base + 5])
    k = k + 1
    local k1 = KEYS[k]
    if kind ~= 'tokens' then
      k = k + 1
    end
    local k2 = KEYS[k]
    local member = rid .. '|' .. amountstr
    if kind == 'tokens' then
      local bucket, width = tonumber(f[base + 3]), tonumber(f[base + 4]) / buckets
      if bucket >= math.floor(now / width) - buckets then
        local field = fmt(bucket)
        local left = tonumber(redis.call('HGET', k1, field) or '0')
          + (actual - tonumber(amountstr))
        if left > 0 then
          if redis.call('HSET', k1, field, fmt(left)) == 1 then
            extend(k1, (bucket + buckets + 1) * width - now)
          end
        else
          redis.call('HDEL', k1, field)
        end
      end
    elseif kind == 'concurrency' then
      free(k1, 'held', k2, member)
    else
      free(k1, 'reserved', k2, member)
      if actual > 0 then
        local spent = tonumber(redis.call('HGET', k1, 'spent') or '0')
        if redis.call('HSET', k1, 'spent', fmt(spent + actual)) == 1 then
          extend(k1, tonumber(f[base + 4]) - now)
        end
      end
    end
  end
  return ''
end

-- share: the header holds share, keys, 0, now, then one limit per budget;
-- KEYS from k + 1: 2 per budget (hash, leases). Answers the shares in one string.
local function share(f, k)
  local out = {}
  for i = 1, #f - 4 do
    local k1, k2 = KEYS[k + 2 * i - 1], KEYS[k + 2 * i]
    local spent = tonumber(redis.call('HGET', k1, 'spent') or '0')
    out[i] = fmt((spent + live(k1, 'reserved', k2)) / tonumber(f[i + 4]))
  end
  return table.concat(out, ' ')
end

local operations = {admit = admit, settle = settle, share = share}
local out, k, a = {}, 0, 1
while a <= #ARGV do
  local f = fields(ARGV[a])
  now = tonumber(f[4])
  local ok, answer = pcall(operations[f[1]], f, k, a)
  if not ok then
    answer = '!' .. tostring(type(answer) == 'table' and answer.err or answer)
  end
  out[#out + 1] = answer
  k, a = k + tonumber(f[2]), a + 1 + tonumber(f[3])
end
return out
