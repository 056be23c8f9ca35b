-- transition applies one status change to a job record atomically.
--
-- KEYS[1]  the record hash
-- KEYS[2]  the record's list of pending callback notices (same hash tag)
-- KEYS[3]  the record's payload key (same hash tag), for a payload too long
--          to be kept in the hash ('pl', 'pl1'... and 'pn' their number),
--          which begin returns
-- The script reads the record once (one HMGET) and writes it once (at
-- most one HDEL and one HSET): every field it changes is gathered first.
--
-- ARGV[1]  op: begin | own | retry | final | submit | event | cancel | requeue |
--          note | wait
-- ARGV[2]  the new status
-- ARGV[3]  now, unix milliseconds
-- ARGV[4]  the history entry, JSON without its closing brace (a short
--          history gets it in the short form); for wait, the wait's JSON
--          (the record's 'waiting')
-- ARGV[5]  dedupe field ("" for none): an event seen before changes nothing
-- ARGV[6]  last_error JSON ("" to leave it), set when the change applies,
--          in parts of at most 64 bytes ('e', 'e1'... 'e7': record.go's
--          valueFields), or whole when it has more than eight
-- ARGV[7]  the record TTL, milliseconds: a record lives at least that long
--          past its last change
-- ARGV[8]  the task that makes the change ("" for none): begin's takes the
--          message up; any other op is refused when the message has a
--          task of its own that is another (the sweeper gave it a new one)
-- ARGV[9]  the store's clock, unix milliseconds, and ARGV[10] the slack,
--          milliseconds: a change that finds the record's keys set to live
--          less than the TTL from now ('xp', when they expire by that clock)
--          extends them to TTL + slack, so that the changes of the next
--          slack write no expiry at all
-- ARGV[11..] field/value pairs set when the field is still empty (ids, and
--           'bl', the category of the first billable pricing), except
--           'pr', the pricing object, which is set whatever it was, and a
--           field written "!name", set whatever it held when the status
--           changes (begin's owner), and one written "=name", set whatever
--           it held (wait's pair slot); '?lean' makes begin answer only
--           what a send needs: {..., again, attempts, failures, payload},
--           and '?known' with it leaves the payload out ('': the caller
--           read it with the record already)
--
-- Returns {outcome, status_after, notice, waited, tenant, sender[, hgetall...]}
-- (begin) or {outcome, status_after, notice, billed, waited, tenant, sender},
-- where notice is the sequence number of the callback notice the change
-- queued (0 for none: the status did not change, or the record has no
-- callback URL), billed is 1 when this change marked the message billable
-- ('bl'), waited the wait the change ended ('' for none: the store drops it
-- from the wait indexes, which are keyed by tenant and sender), and outcome
-- one of:
--   ok        the status changed
--   kept      nothing changed but the history, which keeps the event
--   duplicate the event was applied before: nothing written
--   refused   the op is not allowed from the current status: nothing written
--   missing   no such record
local key = KEYS[1]
local op, new, now, entry, dedupe, err, task = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[8]
local ttl, wall, slack = tonumber(ARGV[7]), tonumber(ARGV[9]), tonumber(ARGV[10])

-- The given fields (ARGV[11..]), each {name, value, where}: one set when
-- still empty is read with the record (where: its place in the answer).
local read = {'s', 'tid', 'wt', 'cb', 'h', 'hn', 'a', 'fa', 'wr', 'am', 'ps', 'xp', 'tn', 'sn', 'pid', 'pl', 'pn', 'c'}
local given = {}
local lean, known = false, false
for i = 11, #ARGV, 2 do
  local name = ARGV[i]
  if name == '?lean' then
    lean = true
  elseif name == '?known' then
    known = true
  else
    local mode, where = string.sub(name, 1, 1), nil
    if mode ~= '!' and mode ~= '=' and name ~= 'pr' then
      read[#read + 1] = name
      where = #read
    end
    given[#given + 1] = {name, ARGV[i + 1], where}
  end
end
-- A take-up for a send reads the payload's next parts with the record: a
-- payload of up to four parts (256 bytes) in this one read.
local early = #read + 1
if lean and not known then
  for i = 1, 3 do read[#read + 1] = 'pl' .. i end
end
if dedupe ~= '' then read[#read + 1] = dedupe end

-- Everything the script reads of the record, in one call.
local got = redis.call('HMGET', key, unpack(read))
local cur = got[1]
if not cur then return {'missing', ''} end
local tid, wt, hascb = got[2], got[3] or '', got[4]
local hist, hn = got[5] or '', tonumber(got[6]) or 0
local attempts, failures = tonumber(got[7]) or 0, tonumber(got[8]) or 0
local wire, ambiguous, pairslot = got[9], got[10], got[11]
local xp = tonumber(got[12]) or 0
local tenant, sender = got[13] or '', got[14] or ''
-- The payload's first part, when the hash keeps the payload.
local part, parts = got[16], tonumber(got[17]) or 1
local created = tonumber(got[18]) or 0

local phase1 = {scheduled = true, queued = true, sending = true, retrying = true}
local rank = {submitted = 1, enqueued = 2, sent = 3, delivered = 4, read = 5}
local maxHistory = 100

-- The writes, gathered: set holds field -> value, del the fields to drop
-- (those set again are not dropped).
local set, del = {}, {}
local function int(n) return string.format('%.0f', n) end
local function flush()
  local d = {}
  for f in pairs(del) do
    if set[f] == nil then d[#d + 1] = f end
  end
  if #d > 0 then redis.call('HDEL', key, unpack(d)) end
  local s = {}
  for f, v in pairs(set) do
    s[#s + 1] = f
    s[#s + 1] = v
  end
  if #s > 0 then redis.call('HSET', key, unpack(s)) end
  set, del = {}, {}
end
-- done writes what was gathered and answers res.
local function done(res)
  flush()
  return res
end

if dedupe ~= '' then
  if got[#read] then return {'duplicate', cur} end
  set[dedupe] = 1
end

-- A submit repeated after its answer was lost (Redis went away meanwhile)
-- finds its own provider id: nothing more happened.
if op == 'submit' and rank[cur] then
  for i = 11, #ARGV, 2 do
    if ARGV[i] == 'pid' and got[15] == ARGV[i + 1] then return done({'duplicate', cur}) end
  end
end

-- A record's first task has the record's id (KEYS[1] is chatq:m:{id}).
if task ~= '' and op ~= 'begin' and op ~= 'wait' and (tid or string.sub(key, 10, -2)) ~= task then
  return done({'refused', cur})
end

local owned = {}
local billed = 0
for _, g in ipairs(given) do
  local name, value, where = g[1], g[2], g[3]
  local mode = string.sub(name, 1, 1)
  if mode == '!' then
    owned[#owned + 1] = string.sub(name, 2)
    owned[#owned + 1] = value
  elseif mode == '=' then
    set[string.sub(name, 2)] = value
  elseif name == 'pr' then
    set.pr = value
  elseif not got[where] and set[name] == nil then
    set[name] = value
    if name == 'bl' then billed = 1 end
  end
end

-- inParts sets field name to v as record.go's valueFields lays a value
-- out: name, name1... each of at most 64 bytes (so that the record keeps
-- Redis's compact encoding), or name alone for a value of more than
-- maxParts parts. The parts of an earlier, longer value are dropped.
local maxParts = 8
local function inParts(name, v)
  local n = math.ceil(#v / 64)
  if n > maxParts then n = 1 end
  for i = 0, maxParts - 1 do
    local f = name
    if i > 0 then f = name .. i end
    if n == 1 and i == 0 then
      set[f] = v
    elseif i < n then
      set[f] = string.sub(v, i * 64 + 1, (i + 1) * 64)
    else
      del[f] = true
    end
  end
end

-- A change keeps the record and its payload for the TTL from now on
-- (its notices get the record's life when one is queued). GT never
-- shortens a life: a scheduled message's keys may be set to last longer.
-- Keys set to live a TTL from now already are left alone ('xp').
local function extend()
  if xp >= wall + ttl then return end
  redis.call('PEXPIRE', KEYS[1], ttl + slack, 'GT')
  if KEYS[3] and not part then redis.call('PEXPIRE', KEYS[3], ttl + slack, 'GT') end
  xp = wall + ttl + slack
  set.xp = int(xp)
end

-- A history is short (compact.go: a status code, the time in
-- milliseconds after the record's creation in base 36, and the note as a
-- JSON string, entry after entry), or JSON, '[' first, in a record written
-- before histories were short: that one grows in JSON.
local json = string.sub(hist, 1, 1) == '['
local codes = {queued = 'Q', scheduled = 'P', sending = 'G', retrying = 'Y', submitted = 'U', dead = 'D',
  expired = 'X', canceled = 'C', enqueued = 'E', sent = 'S', delivered = 'V', read = 'R', failed = 'F'}
local digits = '0123456789abcdefghijklmnopqrstuvwxyz'
local function base36(n)
  local sign, s = '', ''
  if n < 0 then sign, n = '-', -n end
  repeat
    local d = n % 36
    s = string.sub(digits, d + 1, d + 1) .. s
    n = (n - d) / 36
  until n == 0
  return sign .. s
end
-- short turns a JSON entry (ARGV[4], or one made of it here) into the
-- short form; its note is the last one it names.
local function short(e)
  local st = string.match(e, '^{"status":"([a-z]+)"')
  local note = string.match(e, '^.*,"note":(".*")}$') or ''
  return codes[st] .. base36(tonumber(now) - created) .. note
end
-- had says whether the history holds an entry of status st.
local function had(st)
  if json then return string.find(hist, '"status":"' .. st .. '"', 1, true) ~= nil end
  local code, i = codes[st], 1
  while i <= #hist do
    if string.sub(hist, i, i) == code then return true end
    i = select(2, string.find(hist, '^%-?[0-9a-z]+', i + 1)) + 1
    if string.sub(hist, i, i) == '"' then
      -- The note's end: the first quote not escaped.
      repeat
        local q = string.find(hist, '["\\]', i + 1)
        i = q + (string.sub(hist, q, q) == '\\' and 1 or 0)
      until string.sub(hist, q, q) == '"'
      i = i + 1
    end
  end
  return false
end

-- append adds entry e (JSON) to the history; changes says that it records
-- a status change. A status change is always kept: the history holds
-- every status change of the message's life. An annotation (an entry that
-- keeps the status: a repeated or late event, a note) is dropped once the
-- history holds maxHistory entries, so that a stream of repeats cannot
-- grow the record without end. 'hn' counts the entries.
local function append(e, changes)
  if not changes and hn >= maxHistory then return end
  hn = hn + 1
  if not json then
    hist = hist .. short(e)
  elseif hist == '[]' then
    hist = '[' .. e .. ']'
  else
    hist = string.sub(hist, 1, -2) .. ',' .. e .. ']'
  end
  set.h, set.hn = hist, hn
end

-- A status change ends the message's wait, if any, and frees the pair
-- slot it held: the next wait or send asks again. 'wr' (on the wire) is
-- left: it means something only while the status is sending, which only
-- begin sets, and begin writes it.
local waited = ''
local function change()
  waited = wt
  if wt ~= '' then del.wt = true end
  if pairslot then del.ps = true end
  if op == 'event' and new == 'read' and cur ~= 'delivered' then
    if not had('delivered') then
      append((string.gsub(entry, '"status":"read"', '"status":"delivered"', 1)) .. ',"note":"implied by read"}', true)
    end
  end
  set.s, set.u = new, now
  if err ~= '' then inParts('e', err) end
  for i = 1, #owned, 2 do set[owned[i]] = owned[i + 1] end
  if op == 'begin' then
    attempts = attempts + 1
    set.a = attempts
  end
  -- A failed attempt counts towards the retry budget, whichever task made
  -- it: a new task for the message does not start the count again.
  if op == 'retry' then
    failures = failures + 1
    set.fa = failures
  end
  append(entry .. '}', true)
  cur = new
  return 'ok'
end

local function keep(note)
  append(entry .. ',"note":"' .. note .. '"}')
  set.u = now
  return 'kept'
end

local outcome
local again = false
if op == 'begin' then
  -- The message is taken up for a send that follows at once: it is on the
  -- wire from now on, and a worker lost from now on may have sent it.
  if cur == 'sending' then
    -- Taken up already. Only the task that owns the message may take it
    -- up again: asynq handed that task back (its worker died, or lost
    -- Redis for longer than its lease), or the sweeper gave the message a
    -- new task after its owner was lost. The previous attempt's outcome is
    -- unknown: it counts as failed, and the message may have gone out
    -- already, which this send must own up to (ambiguous).
    if task == '' or tid ~= task then return done({'refused', cur}) end
    if wire == '1' then ambiguous = '1' end
    failures = failures + 1
    set.fa = failures
  elseif not phase1[cur] then
    return done({'refused', cur})
  end
  -- An ambiguous message's history says it is sent again.
  if ambiguous then
    again = true
    del.am = true
    entry = entry .. ',"note":"sent again: the previous attempt\'s outcome was not recorded (worker lost)"'
  end
  outcome = change()
  set.wr = 1
elseif op == 'wait' then
  -- The message waits, its status unchanged: no history entry, no notice.
  -- Like begin, any task may: the message waits for the latest one's turn.
  if cur ~= 'queued' and cur ~= 'scheduled' and cur ~= 'retrying' then return done({'refused', cur}) end
  if task ~= '' then set.tid = task end
  set.wt = entry
  extend()
  return done({'kept', cur, 0, 0})
elseif op == 'own' or op == 'retry' or op == 'final' or op == 'submit' then
  if phase1[cur] then
    outcome = change()
  elseif op == 'submit' and rank[cur] then
    outcome = keep('accepted again after ' .. cur)
  else
    return done({'refused', cur})
  end
elseif op == 'cancel' then
  if cur == 'scheduled' or cur == 'queued' or cur == 'retrying' then
    outcome = change()
  else
    return done({'refused', cur})
  end
elseif op == 'requeue' then
  if cur == 'dead' then outcome = change() else return done({'refused', cur}) end
elseif op == 'note' then
  -- An annotation: the history keeps it under the current status.
  entry = string.gsub(entry, '"status":"[a-z]*"', '"status":"' .. cur .. '"', 1)
  append(entry .. '}')
  set.u = now
  extend()
  return done({'kept', cur, 0})
elseif op == 'event' then
  if new == 'failed' then
    if phase1[cur] or (rank[cur] and rank[cur] < rank['delivered']) then
      outcome = change()
    else
      outcome = keep('after ' .. cur .. ', not applied')
    end
  elseif rank[new] then
    if cur == 'failed' then
      if rank[new] >= rank['delivered'] then outcome = change() else outcome = keep('after failed, not applied') end
    elseif phase1[cur] or (rank[cur] and rank[new] > rank[cur]) then
      outcome = change()
    elseif rank[cur] and rank[new] == rank[cur] then
      outcome = keep('repeated')
    else
      outcome = keep('after ' .. cur .. ', not applied')
    end
  else
    return done({'refused', cur})
  end
else
  return redis.error_reply('transition: unknown op ' .. op)
end
extend()
flush()

-- A status change of a record with a callback URL queues a notice: what
-- the change left in the record's fields that a later change may write
-- again (status, time, last error, attempts, ids, pricing; "" for one
-- that is not set), and the length in bytes of the history then. The
-- deliverer puts those fields over the record as it finds it and cuts the
-- history there (it only ever grows at its end), which gives the record as
-- of this change (notices.go): a notice stays small however long the
-- history grows. It is written here, with the change, so that notices are
-- never lost nor reordered, whatever happens to the process afterwards.
local notice = 0
if outcome == 'ok' and hascb then
  notice = redis.call('HINCRBY', key, 'cn', 1)
  local names = {'s', 'u', 'e', 'a', 'pid', 'wid', 'pr', 'bl', 'e1'}
  local values = redis.call('HMGET', key, unpack(names))
  local fields = {}
  for i = 1, #names - 1 do fields[names[i]] = values[i] or '' end
  if values[#names] then
    -- The last error whole, from its parts.
    local more = {}
    for i = 2, maxParts - 1 do more[#more + 1] = 'e' .. i end
    local rest = redis.call('HMGET', key, unpack(more))
    fields.e = fields.e .. values[#names]
    for i = 1, #rest do fields.e = fields.e .. (rest[i] or '') end
  end
  local t = redis.call('TIME')
  redis.call('RPUSH', KEYS[2], cjson.encode({n = notice, t = t[1] * 1000 + math.floor(t[2] / 1000), c = fields,
    hl = #hist}))
  local left = redis.call('PTTL', key)
  if left > 0 then redis.call('PEXPIRE', KEYS[2], left) end
end

-- The wait indexes are keyed by tenant and sender: only an ended wait
-- answers them.
if waited == '' then tenant, sender = '', '' end

if op == 'begin' then
  local res = {outcome, cur, notice, waited, tenant, sender}
  if lean then
    local body = part
    if known then
      body = ''
    elseif not part then
      body = (KEYS[3] and redis.call('GET', KEYS[3])) or ''
    elseif parts > 1 then
      local rest = {}
      for i = 1, math.min(parts - 1, 3) do rest[i] = got[early + i - 1] or '' end
      if parts > 4 then
        local names = {}
        for i = 4, parts - 1 do names[#names + 1] = 'pl' .. i end
        local more = redis.call('HMGET', key, unpack(names))
        for i = 1, #more do rest[3 + i] = more[i] or '' end
      end
      body = part .. table.concat(rest)
    end
    res[#res + 1] = again and '1' or '0'
    res[#res + 1] = int(attempts)
    res[#res + 1] = int(failures)
    res[#res + 1] = body
    return res
  end
  local all = redis.call('HGETALL', key)
  for i = 1, #all do res[#res + 1] = all[i] end
  if again then
    res[#res + 1] = '!again'
    res[#res + 1] = '1'
  end
  -- A payload too long for the hash has a key of its own.
  local body = not part and KEYS[3] and redis.call('GET', KEYS[3])
  if body then
    res[#res + 1] = 'pl'
    res[#res + 1] = body
  end
  return res
end
return {outcome, cur, notice, billed, waited, tenant, sender}
