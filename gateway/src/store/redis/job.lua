-- Tailgate: one job's state changes, each one atomic step on one Cluster slot.
-- KEYS: 1 the meta hash `tailgate:{<job>}:meta`. The job's other keys share its hash tag
--   (so its Cluster slot) and are named from it: `:log` (the record stream), `:capgo`
--   (Capgo confirmations), `:gone` (the tombstone). Only one key is declared because,
--   while a Cluster slot moves, a command that names several keys is refused (TRYAGAIN)
--   for as long as one of them is missing on the node, and a live job's tombstone and
--   Capgo hash mostly are: the whole move would refuse every call.
-- ARGV: 1 op (load | append | end | note), 2 now ms, 3 epoch for a new job,
--   4 retention ms after the terminal status, 5 extra ms a tombstone outlives it,
--   6 the command that announces appends (PUBLISH on one server, SPUBLISH on a Cluster),
--   then the op's own arguments (see each op below).
-- Counters are strings in the hash and plain numbers here (exact below 2^53); `n` is
-- compared as a decimal string, so any u64 works.
local meta_key = KEYS[1]
local tag = string.sub(meta_key, 1, -6)
local log_key, capgo_key, gone_key = tag .. ':log', tag .. ':capgo', tag .. ':gone'
local op, now = ARGV[1], tonumber(ARGV[2])
local retention, tomb_extra = tonumber(ARGV[4]), tonumber(ARGV[5])
local announce = ARGV[6]

-- On a Cluster, mid slot move, the old node runs the script while it has the meta hash,
-- but refuses any other key of the slot it does not have (one not yet created, or sent
-- ahead). `kcall` turns that refusal into TRYAGAIN, so the client tries again (by then at
-- the new node, through ASK); any other error is raised as `redis.call` raises it. Each
-- op touches such keys before its first write (see `append` and `note`), so a refused run
-- has changed nothing.
local function kcall(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    if string.find(reply.err, 'non local key', 1, true) then
      error({err = "TRYAGAIN the job's slot is moving"})
    end
    return redis.call(...)
  end
  return reply
end

local FIELDS = {'ep', 'next', 'st', 'ec', 'ln', 'lines', 'bytes', 'sb', 'dl', 'tr',
  'cr', 'sa', 'fa', 'ac', 'done'}
local NUMERIC = {next = true, lines = true, bytes = true, sb = true, dl = true,
  tr = true, cr = true, ac = true, done = true}

local function str(v)
  if type(v) == 'number' then return string.format('%.0f', v) end
  return v
end

-- Decimal strings without leading zeros: is a greater than b?
local function n_gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

-- What the hash holds now, by field index: the strings as read or last written, and
-- the values they stand for. Only changed fields are formatted and written again.
local held_raw, held_val = {}, {}

local function read_meta()
  local raw = redis.call('HMGET', meta_key, unpack(FIELDS))
  if not raw[2] then return nil end
  local m = {}
  for i, f in ipairs(FIELDS) do
    local s = raw[i] or ''
    local v = s
    if NUMERIC[f] then
      v = tonumber(s)
      -- A missing or odd counter counts as 0, and is written out as such.
      if v == nil then v, s = 0, nil end
    end
    m[f] = v
    held_raw[i], held_val[i] = s, v
  end
  return m
end

local function write_meta(m)
  local args = {}
  for i, f in ipairs(FIELDS) do
    local v = m[f]
    if held_raw[i] == nil or v ~= held_val[i] then
      local s = str(v)
      args[#args + 1] = f
      args[#args + 1] = s
      held_raw[i], held_val[i] = s, v
    end
  end
  if #args > 0 then redis.call('HSET', meta_key, unpack(args)) end
end

local function meta_list(m)
  local out = {}
  for i, f in ipairs(FIELDS) do
    local v = m[f]
    if held_raw[i] ~= nil and v == held_val[i] then out[i] = held_raw[i] else out[i] = str(v) end
  end
  return out
end

-- The job's state, created (queued) when it has none, unless retention deleted it.
local function load_or_create()
  local m = read_meta()
  if m then return m end
  local gone = kcall('GET', gone_key)
  if gone then return nil, gone end
  -- The meta hash was lost (evicted, or deleted by hand) while the stream stayed: a new
  -- life (a new epoch) starts from seq 1, without the old life's records.
  -- One key per command: see KEYS above.
  kcall('DEL', log_key)
  kcall('DEL', capgo_key)
  m = {ep = ARGV[3], next = 1, st = 'queued', ec = '', ln = '', lines = 0, bytes = 0,
    sb = 0, dl = 0, tr = 0, cr = now, sa = '', fa = '', ac = now, done = 0}
  write_meta(m)
  return m, nil, true
end

-- Stores one record with the next seq at `ts` (`ts_s` as a string), and its line of
-- the notice in `notice`; returns the seq. A notice line is
-- `<seq> <ts> <kind> <n> <counted> <json>\n`: the JSON is one line (serde escapes every
-- control character), and the rest is formatted once per record.
local function add(m, notice, ts, ts_s, kind, n, counted, status, exit_code, final,
    json_rest)
  local seq = m.next
  local seq_s = str(seq)
  local json = '{"seq":' .. seq_s .. json_rest
  local fields = {'j', json, 't', ts_s, 'k', kind}
  if n ~= '' then
    fields[#fields + 1] = 'n'
    fields[#fields + 1] = n
  end
  local counted_s = ''
  if counted then
    counted_s = str(counted)
    fields[#fields + 1] = 'c'
    fields[#fields + 1] = counted_s
  end
  kcall('XADD', log_key, seq_s .. '-0', unpack(fields))
  notice[#notice + 1] = seq_s .. ' ' .. ts_s .. ' ' .. kind .. ' ' .. n .. ' ' .. counted_s ..
    ' ' .. json .. '\n'
  m.next = seq + 1
  if ts > m.ac then m.ac = ts end
  if counted then m.sb = m.sb + counted end
  if kind == 'status' then
    m.st, m.ec = status, exit_code
    if final then
      m.fa, m.done = ts, 1
    end
  elseif counted == nil then
    m.tr = 1
  elseif kind ~= 'custom' then
    m.lines = m.lines + 1
    m.bytes = m.bytes + counted
  end
  if m.st == 'queued' then m.st = 'running' end
  if m.sa == '' then m.sa = ts end
  return seq
end

-- After the terminal status: the job's keys expire with retention, and a tombstone
-- (status|exit code|finished ms|deleted ms) outlives them so the job answers 410.
local function expire(m)
  for _, key in ipairs({log_key, meta_key, capgo_key}) do
    kcall('PEXPIRE', key, retention)
  end
  local tomb = m.st .. '|' .. m.ec .. '|' .. str(m.fa) .. '|' .. str(m.fa + retention)
  kcall('SET', gone_key, tomb, 'PX', retention + tomb_extra)
end

-- Appends `records` (tables of n, kind, len, status, exit, final, rest) in order:
-- dedupe by `n`, the size limit's truncation line, the append. Returns the reply.
local function append(m, records, ts, max_bytes, trunc_head, trunc_tail)
  local accepted, duplicates, finished = 0, 0, 0
  local out, notice = {}, {}
  -- `expire` touches the Capgo hash and the tombstone after the records are written:
  -- touch them first (see `kcall`) when this append may end the job.
  local ends = m.done == 1
  for _, r in ipairs(records) do ends = ends or r.final end
  if ends then
    kcall('EXISTS', capgo_key)
    kcall('EXISTS', gone_key)
  end
  local ts_s = str(ts)
  for i, r in ipairs(records) do
    if m.done == 1 then
      finished = 1
      break
    end
    local skip = false
    if r.n ~= '' then
      if m.ln ~= '' and not n_gt(r.n, m.ln) then
        duplicates = duplicates + 1
        skip = true
      else
        m.ln = r.n
      end
    end
    if not skip then
      accepted = accepted + 1
      -- A terminal status always fits; any other status counts like a line.
      local always = r.kind == 'status' and r.final
      if not always and (m.tr == 1 or m.sb + r.len > max_bytes) then
        m.dl = m.dl + 1
        if m.tr == 0 then
          local seq = add(m, notice, ts, ts_s, 'system', '', nil, '', '', false,
            trunc_head .. str(m.sb) .. trunc_tail)
          out[#out + 1] = {seq, 0, m.sb}
        end
      else
        local seq = add(m, notice, ts, ts_s, r.kind, r.n, r.len, r.status, r.exit,
          r.final, r.rest)
        out[#out + 1] = {seq, i, 0}
      end
    end
  end
  write_meta(m)
  if m.done == 1 then expire(m) end
  -- Instances following the job take its new records from this notice (see notices.rs):
  -- `T1 <first seq> <last seq>\n` and a line per record. pcall: a Redis before 7.0 has
  -- no SPUBLISH, and the append stands all the same.
  if #out > 0 then
    redis.pcall(announce, log_key, 'T1 ' .. str(out[1][1]) .. ' ' .. str(m.next - 1) ..
      '\n' .. table.concat(notice))
  end
  -- One string, `ok|accepted|duplicates|finished|<meta fields>|<seq>,<index>,<aux>|...`:
  -- one reply value to parse instead of one per field and record.
  local reply = {'ok', accepted, duplicates, finished, table.concat(meta_list(m), '|')}
  for _, e in ipairs(out) do reply[#reply + 1] = e[1] .. ',' .. e[2] .. ',' .. e[3] end
  return table.concat(reply, '|')
end

if op == 'note' then
  -- 7 the publisher's last sign (ms), 8 and 9 a Capgo confirmation (hash, id) or ''.
  -- A job the store no longer holds is left alone.
  local m = read_meta()
  if not m then return {'none'} end
  local activity = tonumber(ARGV[7])
  -- The Capgo hash is read before the first write (see `kcall`).
  local last
  if ARGV[8] ~= '' then last = tonumber(kcall('HGET', capgo_key, ARGV[8]) or '0') end
  if activity > m.ac then redis.call('HSET', meta_key, 'ac', str(activity)) end
  if ARGV[8] ~= '' then
    if tonumber(ARGV[9]) > last then
      if last == 0 and redis.call('HLEN', capgo_key) >= 64 then
        redis.call('HDEL', capgo_key, redis.call('HRANDFIELD', capgo_key))
      end
      redis.call('HSET', capgo_key, ARGV[8], ARGV[9])
      if m.done == 1 then redis.call('PEXPIRE', capgo_key, retention) end
    end
  end
  return {'ok'}
end

-- The lifecycle never brings back a job Redis no longer holds (and reads the hash once:
-- the lease holder's sweep runs this for every listed job).
local m, gone, created
if op == 'end' then
  m = read_meta()
  if not m then return {'gone', kcall('GET', gone_key) or ''} end
else
  m, gone, created = load_or_create()
  if not m then return {'gone', gone} end
end

if op == 'load' then
  return {'ok', meta_list(m), kcall('HGETALL', capgo_key), created and 1 or 0}
end

if op == 'append' then
  -- 7 batch time, 8 max log bytes, 9 and 10 the truncation line's JSON around its
  -- size, then 7 arguments per record: n, kind, len, status, exit, final, rest.
  local ts, max_bytes = tonumber(ARGV[7]), tonumber(ARGV[8])
  local records = {}
  for i = 11, #ARGV, 7 do
    records[#records + 1] = {n = ARGV[i], kind = ARGV[i + 1],
      len = tonumber(ARGV[i + 2]), status = ARGV[i + 3], exit = ARGV[i + 4],
      final = ARGV[i + 5] == '1', rest = ARGV[i + 6]}
  end
  return append(m, records, ts, max_bytes, ARGV[9], ARGV[10])
end

if op == 'end' then
  -- The lifecycle, once per job whichever instance runs it: 7 running jobs idle since
  -- before this ms become `lost` (8: the record's rest), 9 queued jobs created before
  -- this ms become `expired` (10: its rest).
  local record
  if m.st == 'running' and m.ac <= tonumber(ARGV[7]) then
    record = {n = '', kind = 'status', len = 16, status = 'lost', exit = '', final = true,
      rest = ARGV[8]}
  elseif m.st == 'queued' and m.cr <= tonumber(ARGV[9]) then
    record = {n = '', kind = 'status', len = 16, status = 'expired', exit = '',
      final = true, rest = ARGV[10]}
  else
    return 'ok|0|0|' .. m.done .. '|' .. table.concat(meta_list(m), '|')
  end
  return append(m, {record}, now, 0, '', '')
end

return redis.error_reply('unknown op ' .. tostring(op))
