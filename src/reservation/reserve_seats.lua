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
-- KEYS: 1 stock, 2 hold record, 3 deadlines, 4 holders, 5 outbox, 6..10 seat keys (seat_keys: bitmap,
--       free counts, row sizes, rows hash, bounds of the longest free runs), 11 idempotency record (optional)
-- ARGV: 1 reservation id, 2 user id, 3 category id, 4 quantity, 5 hold ttl ms,
--       6 outbox backlog max, 7 event id or '', 8 request fingerprint or '', 9 idempotency ttl s,
--       10 id of the `reserved` outbox event, 11 mode (`any`, `adjacent` or `named`),
--       12 traceparent of the request or '', FIRST_SEAT_NAME.. seat names (named)
-- Returns {'held', replayed ('0'|'1'), reservation id, event id, amount, currency, created_at_ms,
-- expires_at_ms, seats}; a refusal {code, replayed, seats} where seats lists the taken
-- (`seat_taken`) or unknown (`unknown_seats`) ones, both stored for idempotent requests;
-- `key_reused`; `id_taken` (see below); or `stock_missing`, `stock_pending`, `outbox_backlog`
-- (503s, never stored).
-- The stock read, the sale checks, the idempotency record and the `reserved` entry are
-- reserve.lua's (reserve_prelude.lua). SEATS_PER_REQUEST_MAX (seating::SEATS_PER_REQUEST_MAX)
-- is prepended by the Rust side when it loads the script: it bounds the Lua stack of a
-- BITFIELD call and the size of a hold record and its outbox entry.
local FIRST_SEAT_NAME = 13
local SEATS = seat_keys(6)
local idempotency = KEYS[11]
local mode = ARGV[11]
local quantity = tonumber(ARGV[4])
local user = ARGV[2]

-- The answer to a request already decided: the stored answer of its idempotency key, or
-- the hold of a call resent for the same reservation id (the cluster client resends a
-- script whose connection dropped, and during a failover it may have run). A hold under
-- this id that is not this request's (random ids collided: another user, a quantity or
-- named seats of another request, or a hold no longer held) is `id_taken`, never
-- stored: nothing is written and the engine draws another id. Nil for a new request.
local function replay()
  if idempotency then
    local stored = stored_reserve(idempotency)
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
  if redis.call('EXISTS', KEYS[2]) == 0 then
    return nil
  end
  local held = read_record(KEYS[2])
  local own = held[RECORD.status] == 'held' and held[RECORD.user_id] == user and held[RECORD.quantity] == ARGV[4]
  if own and mode == 'named' then
    local names = {}
    for _, name in ipairs(seat_names(held[RECORD.seats] or '')) do
      names[name] = true
    end
    for position = FIRST_SEAT_NAME, #ARGV do
      own = own and names[ARGV[position]] == true
    end
  end
  if not own then
    return {'id_taken', '0'}
  end
  return {'held', '1', ARGV[1], held[RECORD.event_id], held[RECORD.amount], held[RECORD.currency],
    held[RECORD.created_at_ms], held[RECORD.expires_at_ms], held[RECORD.seats]}
end

-- The seats named in ARGV[FIRST_SEAT_NAME..], looked up in one HMGET: {index, bit,
-- number, name} each, or nil and the unknown names.
local function named_seats()
  local names = {}
  for position = FIRST_SEAT_NAME, #ARGV do
    names[#names + 1] = ARGV[position]
  end
  local seats, unknown = {}, {}
  for position, seat in ipairs(find_seats(SEATS, names)) do
    if not seat or seat.number > seat.row_seats then
      unknown[#unknown + 1] = names[position]
    else
      seats[#seats + 1] = seat
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
  local bits = redis.call('BITFIELD', SEATS.bitmap, unpack(reads))
  local taken = {}
  for position, value in ipairs(bits) do
    if value == 1 then
      taken[#taken + 1] = seats[position]
    end
  end
  return taken
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
    whole = redis.call('GET', SEATS.bitmap)
  end
  if whole then
    return string.sub(whole, byte_offset + 1, byte_offset + length)
  end
  ranges = ranges + 1
  return redis.call('GETRANGE', SEATS.bitmap, byte_offset, byte_offset + length - 1)
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
      redis.call('BITFIELD', SEATS.runs, 'SET', 'u16', '#' .. index, longest)
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
        row_names[seat.index] = redis.call('HGET', SEATS.rows, '#' .. seat.index)
      end
      seat.name = row_names[seat.index] .. '-' .. seat.number
    end
    names[#names + 1] = seat.name
  end
  return table.concat(names, ',')
end

-- The checks of the number of seats and of the named ones (known, free): a refusal and
-- the seats it lists, or nil, nil and the named seats.
local function check_seats(stock)
  if quantity > SEATS_PER_REQUEST_MAX or (mode == 'named' and quantity > tonumber(stock.max_per_user)) then
    return 'too_many_seats'
  end
  if mode ~= 'named' then
    return nil
  end
  local seats, unknown = named_seats()
  if not seats then
    return 'unknown_seats', table.concat(unknown, ',')
  end
  -- Named seats are checked before the count: when one of them is taken the caller learns
  -- which (409 seat_taken) rather than `sold_out`; when all are free, `available` (the free
  -- seats) is at least their number, so the count check cannot refuse them.
  local taken = taken_of(seats)
  if #taken > 0 then
    return 'seat_taken', named_in_order(taken)
  end
  return nil, nil, seats
end

-- The stock and cap checks, then the seats of an `any` or `adjacent` request: a refusal,
-- or nil and the seats.
local function choose_seats(stock, amount, seats)
  if tonumber(stock.available) < quantity then
    return 'sold_out'
  elseif amount > AMOUNT_MAX then
    return 'amount_too_large'
  elseif (tonumber(redis.call('HGET', KEYS[4], user)) or 0) + quantity > tonumber(stock.max_per_user) then
    return 'limit_exceeded'
  elseif mode == 'named' then
    return nil, seats
  end
  local free, sizes = redis.call('GET', SEATS.free), redis.call('GET', SEATS.sizes)
  seats = best_adjacent(free, sizes, redis.call('GET', SEATS.runs), quantity)
  if not seats and mode == 'any' then
    seats = first_free(free, sizes, quantity)
  end
  if not seats then
    return 'no_adjacent_seats'
  end
  return nil, seats
end

-- Takes the seats and writes the levels, the hold, its deadline, its `reserved` event and
-- the idempotency record. Returns the reply.
local function hold(stock, seats, amount, now)
  local names = named_in_order(seats)
  set_seats(SEATS, seats, 1)
  local reservation_id = ARGV[1]
  local created = int(now)
  local expires = int(now + tonumber(ARGV[5]))
  local amount_text = int(amount)
  redis.call('HSET', KEYS[1], 'available', int(tonumber(stock.available) - quantity),
    'held', int((tonumber(stock.held) or 0) + quantity))
  redis.call('HINCRBY', KEYS[4], user, quantity)
  redis.call('HSET', KEYS[2], FIELD.status, 'held', FIELD.user_id, user, FIELD.event_id, stock.event_id,
    FIELD.category_id, ARGV[3], FIELD.quantity, ARGV[4], FIELD.amount, amount_text, FIELD.currency, stock.currency,
    FIELD.created_at_ms, created, FIELD.expires_at_ms, expires, FIELD.seats, names)
  -- No TTL while the hold lives (as in reserve.lua).
  redis.call('ZADD', KEYS[3], expires, reservation_id)
  append_reserved(KEYS[5], ARGV[10], reservation_id, user, stock.event_id, ARGV[3], ARGV[4], amount_text,
    stock.currency, created, expires, names, ARGV[12])
  if idempotency then
    store_answer(idempotency, ARGV[8], ARGV[9], 'held', names, reservation_id, stock.event_id, amount_text,
      stock.currency, created, expires)
  end
  return {'held', '0', reservation_id, stock.event_id, amount_text, stock.currency, created, expires, names}
end

local replayed = replay()
if replayed then
  return replayed
end
local stock = read_stock(KEYS[1])
local closed = stock_closed(stock)
if closed then
  return {closed, '0'}
end
local now = now_ms()
local refusal = not stock.seated and 'not_seated' or window_refusal(stock, ARGV[7], now)
if not refusal and redis.call('XLEN', KEYS[5]) >= tonumber(ARGV[6]) then
  return {'outbox_backlog', '0'}
end
local amount = tonumber(stock.price) * quantity
local listed, seats
if not refusal then
  refusal, listed, seats = check_seats(stock)
end
if not refusal then
  refusal, seats = choose_seats(stock, amount, seats)
end
if refusal then
  if idempotency then
    store_answer(idempotency, ARGV[8], ARGV[9], refusal, listed or '')
  end
  return {refusal, '0', listed or ''}
end
return hold(stock, seats, amount, now)
