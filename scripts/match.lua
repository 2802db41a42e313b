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

-- The walks through the waiting calls are done by mserve in Go
-- (plan.first_free_holder, plan.next_unheld), which knows which routing
-- strings the servants hold and follows each plan.assign: in Lua each
-- would cost a function call or a table lookup per waiting call, per round.

-- rule 1: plan.first_free_holder() walks the queue, oldest first, for a
-- call whose routing string a free servant holds (with an index kept in
-- Go, where a walk in Lua asking plan.free_holder(i) for each call would
-- cost a function call per waiting call)
local function same_route(plan)
  local i, j = plan.first_free_holder()
  return i ~= nil and plan.assign(i, j)
end

-- a servant never used, or idle past its claim (idle_for is exact: Go
-- computes it in nanoseconds)
local function open(s, expire)
  return not s.used or (s.in_flight == 0 and s.backlog == 0 and s.idle_for > expire)
end

-- rules 2 and 3
local function new_route(servants, plan, expire)
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
    -- rule 3: wake up when the soonest claim expires, if some call waits
    -- for a routing string nobody holds
    if wake and plan.next_unheld() then plan.wake_in(wake) end
    return false
  end
  -- rule 2: plan.next_unheld(i) walks the queue (in Go) for the next call
  -- whose routing string no servant holds
  local i = plan.next_unheld()
  while i do
    for j = 1, #servants do
      local s = servants[j]
      if open(s, expire) and plan.can_take(j, i) then
        return plan.assign(i, j)
      end
    end
    i = plan.next_unheld(i)
  end
  return false
end

mserve.algorithm("lua.match", function(calls, servants, plan)
  local expire = mserve.route_expire
  -- plan.any_free: with no free slot anywhere nothing can move (and rule 3
  -- asks for no wake-up: only free servants' claims count)
  while plan.any_free() and
    (same_route(plan) or new_route(servants, plan, expire)) do
  end
end)
