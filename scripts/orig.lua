-- orig: the oldest waiting call goes to the first free servant in list
-- order. The kdb+ mserve's "orig", as a reference for writing algorithms:
-- it picks exactly what the built-in orig picks.
--
--   MSERVE_PLUGINS=scripts/orig.lua MSERVE_ALGO=lua.orig mserve ...

mserve.algorithm("lua.orig", function(calls, servants, plan)
  for i = 1, #calls do
    if not plan.any_free() then return end
    for j = 1, #servants do
      if plan.can_take(j, i) then
        plan.assign(i, j)
        break
      end
    end
  end
end)
