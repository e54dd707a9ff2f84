-- The seating prelude: the seat layout of src/seating.rs, shared by every script that
-- lays out, takes or frees seats (concatenated before it, so a script stays one EVALSHA).
-- A seated category's seat keys come in KEYS in the order of Keyspace::seat_keys:
-- bitmap (1 = held or sold, one byte-aligned segment per row), 16-bit free counts per
-- row, 16-bit row sizes, rows hash (row name to `index:byte offset:seats`, `#index` to
-- row name), 16-bit upper bounds of each row's longest free run.

-- The seat keys that start at KEYS[first], by name.
local function seat_keys(first)
  return {bitmap = KEYS[first], free = KEYS[first + 1], sizes = KEYS[first + 2], rows = KEYS[first + 3],
    runs = KEYS[first + 4]}
end

-- The 16-bit big-endian count at `index` (from 0) of a string of counts.
local function u16(text, index)
  return string.byte(text, 2 * index + 1) * 256 + string.byte(text, 2 * index + 2)
end

-- The rows of a seat map from its row sizes and names (`names[i]` the name of row i - 1):
-- {name, index, byte_offset, seats} in map order, and the bitmap's length in bytes. Each
-- row starts on a byte boundary, so one GETRANGE reads one row.
local function seat_map_rows(sizes, names)
  local rows = {}
  local byte_offset = 0
  for index = 0, #sizes / 2 - 1 do
    local seats = u16(sizes, index)
    rows[#rows + 1] = {name = names[index + 1], index = index, byte_offset = byte_offset, seats = seats}
    byte_offset = byte_offset + math.ceil(seats / 8)
  end
  return rows, byte_offset
end

-- Writes a seat map's keys with every seat free, replacing whatever they held.
local function lay_out_seats(keys, sizes, rows, bytes)
  redis.call('DEL', keys.bitmap, keys.free, keys.sizes, keys.rows, keys.runs)
  for _, row in ipairs(rows) do
    redis.call('HSET', keys.rows, row.name, row.index .. ':' .. row.byte_offset .. ':' .. row.seats,
      '#' .. row.index, row.name)
  end
  redis.call('SETBIT', keys.bitmap, bytes * 8 - 1, 0)
  redis.call('SET', keys.free, sizes)
  redis.call('SET', keys.sizes, sizes)
  -- All seats free: each row's longest run is the row.
  redis.call('SET', keys.runs, sizes)
end

-- Sets the bits of `seats` ({index = row index, bit = bit in the bitmap}) to `value`
-- (1 taken, 0 free) in one BITFIELD, and moves each row's 16-bit free count the other
-- way in another. Freeing seats can join runs, so then each row's bound of its longest
-- free run goes back to "unknown" (65535); taking seats only shortens runs, so the
-- bounds stay true.
local function set_seats(keys, seats, value)
  local bits, per_row, rows = {}, {}, {}
  for _, seat in ipairs(seats) do
    bits[#bits + 1] = 'SET'
    bits[#bits + 1] = 'u1'
    bits[#bits + 1] = seat.bit
    bits[#bits + 1] = value
    if not per_row[seat.index] then
      per_row[seat.index] = 0
      rows[#rows + 1] = seat.index
    end
    per_row[seat.index] = per_row[seat.index] + 1
  end
  redis.call('BITFIELD', keys.bitmap, unpack(bits))
  local counts = {}
  local sign = value == 1 and -1 or 1
  for _, index in ipairs(rows) do
    counts[#counts + 1] = 'INCRBY'
    counts[#counts + 1] = 'u16'
    counts[#counts + 1] = '#' .. index
    counts[#counts + 1] = sign * per_row[index]
  end
  redis.call('BITFIELD', keys.free, unpack(counts))
  if value == 0 then
    local unknown = {}
    for _, index in ipairs(rows) do
      unknown[#unknown + 1] = 'SET'
      unknown[#unknown + 1] = 'u16'
      unknown[#unknown + 1] = '#' .. index
      unknown[#unknown + 1] = 65535
    end
    redis.call('BITFIELD', keys.runs, unpack(unknown))
  end
end

-- Looks seat names (`ROW-N`) up in the rows hash, in one HMGET: for each name in order
-- {index, bit, number, name, row_seats (its row's size)}, or false when it names no row
-- of the map (the caller checks the number against row_seats).
local function find_seats(keys, names)
  local rows, numbers = {}, {}
  for position, name in ipairs(names) do
    local row, number = string.match(name, '^(.+)%-(%d+)$')
    rows[position] = row or ''
    numbers[position] = tonumber(number)
  end
  local layout = redis.call('HMGET', keys.rows, unpack(rows))
  local seats = {}
  for position = 1, #names do
    local index, byte_offset, size = string.match(layout[position] or '', '^(%d+):(%d+):(%d+)$')
    if index and numbers[position] then
      seats[position] = {index = tonumber(index), bit = tonumber(byte_offset) * 8 + numbers[position] - 1,
        number = numbers[position], name = names[position], row_seats = tonumber(size)}
    else
      seats[position] = false
    end
  end
  return seats
end

-- The names of a comma-separated seat list, in order.
local function seat_names(list)
  local names = {}
  for name in string.gmatch(list, '[^,]+') do
    names[#names + 1] = name
  end
  return names
end
