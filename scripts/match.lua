-- match: keep calls with the same routing string on the same servant, so
-- the data they touch stays warm. The kdb+ mserve's "match", rule for rule;
-- it picks exactly what the built-in match picks:
--
--  1. If some waiting call's routing string equals the last routing string
--     of a free servant, the first such call goes to that servant.
--  2. Otherwise the first waiting call whose routing string no servant
--     holds goes to the first free servant that was never used or has been
--     idle longer than the route expiry (mserve.route_expire seconds).
--  3. Otherwise nothing moves until the soonest idle servant's claim
--     expires (plan.wake_in) or something changes.
--
-- A servant that is down or draining holds no routing string.
--
--   MSERVE_PLUGINS=scripts/match.lua MSERVE_ALGO=lua.match mserve ...

-- State reused from round to round (cleared each round), so that a round
-- allocates nothing.
local held = {}     -- routing string -> how many available servants hold it
local assigned = {} -- call index -> true once assigned in this round

local function clear(t)
  for k in pairs(t) do t[k] = nil end
end

local function assign(plan, i, j)
  if plan.assign(i, j) then
    assigned[i] = true
    return true
  end
  return false
end

-- rule 1
local function same_route(calls, servants, plan)
  local any = false
  for j = 1, #servants do
    local s = servants[j]
    if s.available and s.free > 0 and s.used then
      any = true
      break
    end
  end
  if not any then return false end
  for i = 1, #calls do
    local route = calls[i].route
    if not assigned[i] and held[route] then
      for j = 1, #servants do
        local s = servants[j]
        if s.used and s.last_route == route and plan.can_take(j, i) then
          return assign(plan, i, j)
        end
      end
    end
  end
  return false
end

-- a servant never used, or idle past its claim (idle_for is exact: Go
-- computes it in nanoseconds)
local function open(s, expire)
  return not s.used or (s.in_flight == 0 and s.backlog == 0 and s.idle_for > expire)
end

-- rules 2 and 3
local function new_route(calls, servants, plan, expire)
  local eligible, wake = false, nil
  for j = 1, #servants do
    local s = servants[j]
    if s.available and s.free > 0 then
      if not s.used then
        eligible = true
      elseif s.in_flight == 0 and s.backlog == 0 then
        local left = expire - s.idle_for -- seconds until its claim expires
        if left < 0 then
          eligible = true
        elseif wake == nil or left < wake then
          wake = left
        end
      end
    end
  end
  if not eligible then
    if wake then
      for i = 1, #calls do
        if not assigned[i] and not held[calls[i].route] then
          plan.wake_in(wake)
          break
        end
      end
    end
    return false
  end
  for i = 1, #calls do
    if not assigned[i] and not held[calls[i].route] then
      for j = 1, #servants do
        local s = servants[j]
        if open(s, expire) and plan.can_take(j, i) then
          local old, was = s.last_route, s.used
          if not assign(plan, i, j) then return false end
          if was then
            held[old] = held[old] - 1
            if held[old] <= 0 then held[old] = nil end
          end
          held[s.last_route] = (held[s.last_route] or 0) + 1
          return true
        end
      end
    end
  end
  return false
end

mserve.algorithm("lua.match", function(calls, servants, plan)
  local expire = mserve.route_expire
  clear(held)
  clear(assigned)
  for j = 1, #servants do
    local s = servants[j]
    if s.available and s.used then
      held[s.last_route] = (held[s.last_route] or 0) + 1
    end
  end
  while same_route(calls, servants, plan) or new_route(calls, servants, plan, expire) do end
end)
