-- bench.hash: a small locality algorithm written for the locality
-- benchmark, to show what keeping keys on "their" servant is worth when the
-- decision is made inside mserve (a Lua script) rather than across a plugin
-- round trip. It is not one of mserve's shipped algorithms.
--
--  1. A call's home is a hash of its routing string modulo the number of
--     servants. A call whose home has a free slot goes there.
--  2. A call whose home stays busy for longer than -route-expire (here:
--     how long a call may wait for its home) goes to the next free servant
--     after it instead, so that a hot key or an unlucky hash cannot flood
--     one servant while others idle.
--
--   mserve -plugins examples/benchmarks/hash.lua -algo bench.hash -route-expire 5ms ...

local homes = {}   -- routing string -> home index, remembered
local nhomes = 0
local nservants = 0

-- hash: a polynomial hash of the bytes, mixed by a Lehmer generator step
-- (Lua 5.1 has no bit operations; every product here stays below 2^53).
local function hash(s)
  local h = 7
  for k = 1, #s do
    h = (h * 31 + s:byte(k)) % 2147483647
  end
  for _ = 1, 3 do
    h = (h * 48271) % 2147483647
  end
  return h
end

local function home(route, n)
  if n ~= nservants or nhomes > 100000 then
    homes, nhomes, nservants = {}, 0, n
  end
  local j = homes[route]
  if not j then
    j = hash(route) % n + 1
    homes[route] = j
    nhomes = nhomes + 1
  end
  return j
end

mserve.algorithm("bench.hash", function(calls, servants, plan)
  local n = #servants
  local spill = mserve.route_expire
  local wake = nil
  for i = 1, #calls do
    local c = calls[i]
    local j = home(c.route, n)
    if plan.can_take(j, i) then
      plan.assign(i, j)
    else
      local due = c.arrived + spill
      if plan.now >= due then
        for k = 1, n do
          local s = (j + k - 1) % n + 1 -- the next servants after its home
          if plan.can_take(s, i) then
            plan.assign(i, s)
            break
          end
        end
      elseif wake == nil or due < wake then
        wake = due
      end
    end
  end
  if wake then plan.wake_at(wake) end
end)
