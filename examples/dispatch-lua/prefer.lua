-- prefer: every call goes to the servant named PREFERRED while it has a
-- free slot; when it is busy, down or draining, to the free servant with
-- the fewest calls pending. A picker: mserve calls it once per waiting
-- call, oldest first, and sends the call to the servant whose index it
-- returns (nil: the call keeps waiting).
--
-- Edit PREFERRED and save: mserve reloads the script within a second,
-- without a restart, and the next calls go to the new servant.
--
--   mserve -plugins examples/dispatch-lua -algo prefer 3 bin/quickstart-servant

local PREFERRED = "s2"

mserve.picker("prefer", function(call, servants, plan)
  local best, load = nil, nil
  for j = 1, #servants do
    local s = servants[j]
    if plan.can_take(j, call.index) then
      if s.name == PREFERRED then
        return j
      end
      local pending = s.in_flight + s.backlog
      if best == nil or pending < load then
        best, load = j, pending
      end
    end
  end
  return best
end)
