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
--     expires (plan.wake_at) or something changes.
--
-- A servant that is down or draining holds no routing string.
--
--   MSERVE_PLUGINS=scripts/match.lua MSERVE_ALGO=lua.match mserve ...

mserve.algorithm("lua.match", function(calls, servants, plan)
  local expire = mserve.route_expire
  local now = plan.now
  local held = {} -- routing string -> how many available servants hold it
  for j = 1, #servants do
    local s = servants[j]
    if s.available and s.used then
      held[s.last_route] = (held[s.last_route] or 0) + 1
    end
  end
  local assigned = {}

  local function assign(i, j)
    if plan.assign(i, j) then
      assigned[i] = true
      return true
    end
    return false
  end

  -- rule 1
  local function same_route()
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
          if plan.can_take(j, i) and s.used and s.last_route == route then
            return assign(i, j)
          end
        end
      end
    end
    return false
  end

  -- a servant never used, or idle past its claim
  local function open(s)
    return not s.used or (s.in_flight == 0 and s.backlog == 0 and now > s.last_used + expire)
  end

  -- rules 2 and 3
  local function new_route()
    local eligible, wake = false, nil
    for j = 1, #servants do
      local s = servants[j]
      if s.available and s.free > 0 then
        if not s.used then
          eligible = true
        elseif s.in_flight == 0 and s.backlog == 0 then
          local expires = s.last_used + expire
          if now > expires then
            eligible = true
          elseif wake == nil or expires < wake then
            wake = expires
          end
        end
      end
    end
    if not eligible then
      if wake then
        for i = 1, #calls do
          if not assigned[i] and not held[calls[i].route] then
            plan.wake_at(wake)
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
          if plan.can_take(j, i) and open(s) then
            local old, was = s.last_route, s.used
            if not assign(i, j) then return false end
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

  while same_route() or new_route() do end
end)
