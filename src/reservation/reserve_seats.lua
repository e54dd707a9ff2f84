-- reserve_seats: holds seats of a seated category for a user, all or nothing. Checks,
-- before its first write, the idempotency record, the stock, that the category is
-- seated, the event, the sale window, the outbox backlog, the named seats (known, at
-- most max_per_user, free), the stock level, the per-user cap, and then free seats;
-- then writes the seat bits, the free counts, the levels, the hold (with its seats),
-- its deadline, its `reserved` event and the idempotency record together.
-- Seat layout (src/seating.rs): a bitmap with one byte-aligned segment per row (1 =
-- held or sold), 16-bit free counts, sizes and bounds of the longest free run per row,
-- and a hash of row name to `index:byte offset:seats` and `#index` to row name. Whatever
-- the venue size, a reserve reads the counts, sizes and bounds once, skips every row whose
-- free count or bound is too small, reads at most a few rows with GETRANGE (then the
-- whole bitmap once), and writes each key once. A row read without a run long enough
-- gets its exact longest run as its bound (a cache, also written on a refusal), so later
-- reserves skip it until seats in it are freed.
-- KEYS: 1 stock, 2 hold record, 3 deadlines, 4 holders, 5 outbox, 6 seat bitmap, 7 free counts,
--       8 row sizes, 9 rows hash, 10 bounds of the longest free runs, 11 idempotency record (optional)
-- ARGV: 1 reservation id, 2 user id, 3 category id, 4 quantity, 5 hold ttl ms,
--       6 outbox backlog max, 7 event id or '', 8 request fingerprint or '', 9 idempotency ttl s,
--       10 id of the `reserved` outbox event, 11 mode (`any`, `adjacent` or `named`), 12 traceparent of the
--       request or '', 13.. seat names (named)
-- Returns {'held', replayed ('0'|'1'), reservation id, event id, amount, currency, created_at_ms,
-- expires_at_ms, seats}; a refusal {code, replayed, seats} where seats lists the taken
-- (`seat_taken`) or unknown (`unknown_seats`) ones, both stored for idempotent requests;
-- `key_reused`; `id_taken` (see below); or `stock_missing`, `stock_pending`, `outbox_backlog`
-- (503s, never stored).
-- The replay, stock read and sale checks mirror reserve.lua's opening on purpose:
-- reserve.lua is the prelude-free hot path and stays self-contained.
-- Where the named seats start in ARGV (after the request's traceparent, ARGV[12]).
local FIRST_SEAT = 13
local idempotency = KEYS[11]
if idempotency then
  local stored = redis.call('HMGET', idempotency, 'fingerprint', 'outcome', 'reservation_id', 'event_id',
    'amount', 'currency', 'created_at_ms', 'expires_at_ms', 'seats')
  if stored[1] then
    if stored[1] ~= ARGV[8] then
      return {'key_reused', '0'}
    end
    if stored[2] ~= 'held' then
      return {stored[2], '1', stored[9]}
    end
    return {stored[2], '1', stored[3], stored[4], stored[5], stored[6], stored[7], stored[8], stored[9]}
  end
end

-- A call resent for the same reservation id (the cluster client resends a script whose
-- connection dropped, and during a failover it may have run) answers the hold it wrote.
-- A hold under this id that is not this request's (random ids collided: another user, a
-- quantity or named seats of another request, or a hold no longer held) is `id_taken`,
-- never stored: nothing is written and the engine draws another id.
if redis.call('EXISTS', KEYS[2]) == 1 then
  local held = redis.call('HMGET', KEYS[2], FIELD.event_id, FIELD.amount, FIELD.currency, FIELD.created_at_ms,
    FIELD.expires_at_ms, FIELD.seats, FIELD.status, FIELD.user_id, FIELD.quantity)
  local own = held[7] == 'held' and held[8] == ARGV[2] and held[9] == ARGV[4]
  if own and ARGV[11] == 'named' then
    local names = {}
    for name in string.gmatch(held[6] or '', '[^,]+') do
      names[name] = true
    end
    for position = FIRST_SEAT, #ARGV do
      own = own and names[ARGV[position]] == true
    end
  end
  if not own then
    return {'id_taken', '0'}
  end
  return {'held', '1', ARGV[1], held[1], held[2], held[3], held[4], held[5], held[6]}
end

local stock = redis.call('HMGET', KEYS[1], 'state', 'event_id', 'available', 'max_per_user', 'price', 'currency',
  'sale_starts_at_ms', 'sale_ends_at_ms', 'held', 'seated')
if not stock[1] then
  return {'stock_missing', '0'}
end
if stock[1] ~= 'open' then
  return {'stock_pending', '0'}
end

local BITMAP, FREE, SIZES, ROWS, RUNS = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
-- Most seats in one reservation (seating::SEATS_PER_REQUEST_MAX): bounds the Lua stack of
-- a BITFIELD call and the size of a hold record and its outbox entry.
local SEATS_PER_RESERVATION_MAX = 1000
local mode = ARGV[11]
local quantity = tonumber(ARGV[4])

-- The seats named in ARGV[FIRST_SEAT..], looked up in one HMGET: {index, bit, number, name} each,
-- or nil and the unknown names.
local function named_seats()
  local rows, numbers = {}, {}
  for position = FIRST_SEAT, #ARGV do
    local row, number = string.match(ARGV[position], '^(.+)%-(%d+)$')
    rows[#rows + 1] = row
    numbers[#numbers + 1] = tonumber(number)
  end
  local layout = redis.call('HMGET', ROWS, unpack(rows))
  local seats, unknown = {}, {}
  for position = 1, #rows do
    local entry = layout[position]
    local index, byte_offset, size
    if entry then
      index, byte_offset, size = string.match(entry, '^(%d+):(%d+):(%d+)$')
    end
    if not entry or numbers[position] > tonumber(size) then
      unknown[#unknown + 1] = ARGV[position + FIRST_SEAT - 1]
    else
      seats[#seats + 1] = {index = tonumber(index), bit = tonumber(byte_offset) * 8 + numbers[position] - 1,
        number = numbers[position], name = ARGV[position + FIRST_SEAT - 1]}
    end
  end
  if #unknown > 0 then
    return nil, unknown
  end
  return seats
end

-- The named seats that are held or sold, in one BITFIELD.
local function taken_of(seats)
  local reads = {}
  for _, seat in ipairs(seats) do
    reads[#reads + 1] = 'GET'
    reads[#reads + 1] = 'u1'
    reads[#reads + 1] = seat.bit
  end
  local bits = redis.call('BITFIELD', BITMAP, unpack(reads))
  local taken = {}
  for position, value in ipairs(bits) do
    if value == 1 then
      taken[#taken + 1] = seats[position]
    end
  end
  return taken
end

local function u16(text, index)
  return string.byte(text, 2 * index + 1) * 256 + string.byte(text, 2 * index + 2)
end

-- Whether seat `number` (from 1) of a row's bytes is taken.
local function taken_in(bytes, number)
  local byte = string.byte(bytes, math.floor((number - 1) / 8) + 1) or 0
  return bit.band(byte, bit.rshift(128, (number - 1) % 8)) ~= 0
end

-- The start of the run of `count` free seats in a row whose middle is closest to the
-- row's middle (seats + 1) / 2, ties to the lower numbers; nil when the row has none.
-- Distances are doubled to stay in integers: |2 * start + count - 1 - (seats + 1)|.
-- Whole bytes that are all free or all taken are stepped over at once, and the scan
-- stops once no later run can come closer (runs further right only move away, and a
-- tie goes to the lower seats). Also returns the row's longest free run when it has no
-- run of `count` (the scan then went through the whole row).
local function best_start(bytes, seats, count)
  local best, best_distance
  local longest = 0
  local ideal = math.floor((seats + 2 - count) / 2)
  local function distance_of(start)
    return math.abs(2 * start + count - seats - 2)
  end
  local function consider(first, last)
    longest = math.max(longest, last - first + 1)
    if last - first + 1 < count then
      return
    end
    for _, start in ipairs({ideal, ideal + 1}) do
      start = math.max(first, math.min(last - count + 1, start))
      local distance = distance_of(start)
      if not best or distance < best_distance or (distance == best_distance and start < best) then
        best, best_distance = start, distance
      end
    end
  end
  local run
  local number = 1
  while number <= seats do
    if not run and best and number > ideal and distance_of(number) >= best_distance then
      -- Any run from here on starts at `number` or later: no closer than the best.
      return best
    end
    local byte = string.byte(bytes, math.floor((number - 1) / 8) + 1) or 0
    local whole = (number - 1) % 8 == 0 and number + 7 <= seats and (byte == 0 or byte == 255)
    local taken = whole and byte == 255 or (not whole and bit.band(byte, bit.rshift(128, (number - 1) % 8)) ~= 0)
    if taken then
      if run then
        consider(run, number - 1)
        run = nil
      end
    elseif not run then
      run = number
    end
    number = number + (whole and 8 or 1)
  end
  if run then
    consider(run, seats)
  end
  return best, longest
end

-- Reads rows of the bitmap: GETRANGE for the first few, then the whole bitmap once, so
-- a reserve makes a bounded number of calls however many rows it has to look at.
local whole, ranges = nil, 0
local function row_bytes(byte_offset, seats)
  local length = math.ceil(seats / 8)
  if not whole and ranges >= 4 then
    whole = redis.call('GET', BITMAP)
  end
  if whole then
    return string.sub(whole, byte_offset + 1, byte_offset + length)
  end
  ranges = ranges + 1
  return redis.call('GETRANGE', BITMAP, byte_offset, byte_offset + length - 1)
end

-- Calls visit(index, byte offset, seats) for each row with at least `minimum` free
-- seats (and, with `runs`, a bound of its longest free run at least that), in map
-- order, until it returns something, and returns that (or nil).
local function each_row(free, sizes, runs, minimum, visit)
  local byte_offset = 0
  for index = 0, #sizes / 2 - 1 do
    local seats = u16(sizes, index)
    if u16(free, index) >= minimum and (not runs or u16(runs, index) >= minimum) then
      local found = visit(index, byte_offset, seats)
      if found then
        return found
      end
    end
    byte_offset = byte_offset + math.ceil(seats / 8)
  end
  return nil
end

-- Seats {index, bit, number} of the best `count` adjacent free seats, or nil.
local function best_adjacent(free, sizes, runs, count)
  return each_row(free, sizes, runs, count, function(index, byte_offset, seats)
    local start, longest = best_start(row_bytes(byte_offset, seats), seats, count)
    if not start then
      -- The row's exact longest run: later reserves skip it without reading it.
      redis.call('BITFIELD', RUNS, 'SET', 'u16', '#' .. index, longest)
      return nil
    end
    local chosen = {}
    for number = start, start + count - 1 do
      chosen[#chosen + 1] = {index = index, bit = byte_offset * 8 + number - 1, number = number}
    end
    return chosen
  end)
end

-- The first `count` free seats in map order (rows in order, lowest numbers first).
local function first_free(free, sizes, count)
  local chosen = {}
  return each_row(free, sizes, nil, 1, function(index, byte_offset, seats)
    local bytes = row_bytes(byte_offset, seats)
    for number = 1, seats do
      if not taken_in(bytes, number) then
        chosen[#chosen + 1] = {index = index, bit = byte_offset * 8 + number - 1, number = number}
        if #chosen == count then
          return chosen
        end
      end
    end
    return nil
  end)
end

-- Names the seats (`ROW-N`) and sorts them: rows in map order, then by number.
local function named_in_order(seats)
  table.sort(seats, function(left, right)
    return left.index < right.index or (left.index == right.index and left.number < right.number)
  end)
  local names = {}
  local row_names = {}
  for _, seat in ipairs(seats) do
    if not seat.name then
      if not row_names[seat.index] then
        row_names[seat.index] = redis.call('HGET', ROWS, '#' .. seat.index)
      end
      seat.name = row_names[seat.index] .. '-' .. seat.number
    end
    names[#names + 1] = seat.name
  end
  return table.concat(names, ',')
end

local now = now_ms()
local user = ARGV[2]
local refusal, listed
if not stock[10] then
  refusal = 'not_seated'
elseif ARGV[7] ~= '' and ARGV[7] ~= stock[2] then
  refusal = 'event_mismatch'
elseif stock[7] ~= '' and now < tonumber(stock[7]) then
  refusal = 'sale_not_open'
elseif stock[8] ~= '' and now >= tonumber(stock[8]) then
  refusal = 'sale_closed'
end
local amount = tonumber(stock[5]) * quantity
local available = tonumber(stock[3])
local seats
if not refusal then
  if redis.call('XLEN', KEYS[5]) >= tonumber(ARGV[6]) then
    return {'outbox_backlog', '0'}
  end
  if quantity > SEATS_PER_RESERVATION_MAX or (mode == 'named' and quantity > tonumber(stock[4])) then
    refusal = 'too_many_seats'
  elseif mode == 'named' then
    local unknown
    seats, unknown = named_seats()
    if not seats then
      refusal = 'unknown_seats'
      listed = table.concat(unknown, ',')
    end
  end
end
-- Named seats are checked before the count: when one of them is taken the caller learns
-- which (409 seat_taken) rather than `sold_out`; when all are free, `available` (the free
-- seats) is at least their number, so the count check cannot refuse them.
if not refusal and mode == 'named' then
  local taken = taken_of(seats)
  if #taken > 0 then
    refusal = 'seat_taken'
    listed = named_in_order(taken)
  end
end
if not refusal then
  if available < quantity then
    refusal = 'sold_out'
  elseif amount > 9007199254740991 then
    refusal = 'amount_too_large'
  elseif (tonumber(redis.call('HGET', KEYS[4], user)) or 0) + quantity > tonumber(stock[4]) then
    refusal = 'limit_exceeded'
  elseif mode ~= 'named' then
    local free, sizes = redis.call('GET', FREE), redis.call('GET', SIZES)
    seats = best_adjacent(free, sizes, redis.call('GET', RUNS), quantity)
    if not seats and mode == 'any' then
      seats = first_free(free, sizes, quantity)
    end
    if not seats then
      refusal = 'no_adjacent_seats'
    end
  end
end
if refusal then
  if idempotency then
    redis.call('HSET', idempotency, 'fingerprint', ARGV[8], 'outcome', refusal, 'seats', listed or '')
    redis.call('EXPIRE', idempotency, ARGV[9])
  end
  return {refusal, '0', listed or ''}
end

local names = named_in_order(seats)
set_seats(BITMAP, FREE, RUNS, seats, 1)
local reservation_id = ARGV[1]
local created = int(now)
local expires = int(now + tonumber(ARGV[5]))
local amount_text = int(amount)
redis.call('HSET', KEYS[1], 'available', int(available - quantity), 'held', int((tonumber(stock[9]) or 0) + quantity))
redis.call('HINCRBY', KEYS[4], user, quantity)
redis.call('HSET', KEYS[2], FIELD.status, 'held', FIELD.user_id, user, FIELD.event_id, stock[2],
  FIELD.category_id, ARGV[3], FIELD.quantity, ARGV[4], FIELD.amount, amount_text, FIELD.currency, stock[6],
  FIELD.created_at_ms, created, FIELD.expires_at_ms, expires, FIELD.seats, names)
-- No TTL while the hold lives (as in reserve.lua).
redis.call('ZADD', KEYS[3], expires, reservation_id)
redis.call('XADD', KEYS[5], '*',
  'event', ARGV[10] .. '|reserved|' .. created .. '|' .. reservation_id .. '|held|' .. stock[2] .. '|' ..
    ARGV[3] .. '|' .. ARGV[4] .. '|' .. amount_text .. '|' .. stock[6] .. '|' .. created .. '|' .. expires .. '|',
  'user_id', user, 'payment_id', '', 'seats', names, unpack(trace_fields(ARGV[12])))
if idempotency then
  redis.call('HSET', idempotency, 'fingerprint', ARGV[8], 'outcome', 'held', 'reservation_id', reservation_id,
    'event_id', stock[2], 'amount', amount_text, 'currency', stock[6], 'created_at_ms', created,
    'expires_at_ms', expires, 'seats', names)
  redis.call('EXPIRE', idempotency, ARGV[9])
end
return {'held', '0', reservation_id, stock[2], amount_text, stock[6], created, expires, names}
