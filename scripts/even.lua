-- even: the oldest waiting call goes to the next free servant after the one
-- used last, wrapping around: round robin over the free servants. The kdb+
-- mserve's "even"; it picks exactly what the built-in even picks.
--
--   MSERVE_PLUGINS=scripts/even.lua MSERVE_ALGO=lua.even mserve ...

local next = 0 -- where the next search starts, 0-based: one past the servant used last

mserve.algorithm("lua.even", function(calls, servants, plan)
  local n = #servants
  for i = 1, #calls do
    if not plan.any_free() then return end
    for k = 0, n - 1 do
      local j = (next + k) % n + 1
      if plan.can_take(j, i) then
        plan.assign(i, j)
        next = j
        break
      end
    end
  end
end)
