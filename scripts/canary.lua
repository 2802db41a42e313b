-- canary: send PERCENT percent of calls to servants tagged canary (a new
-- version being tried), the rest to the others; among a group, the free
-- servant with the fewest pending calls. If a group has no available
-- servant at all, its calls go to the other group, so that a missing canary
-- never stalls traffic.
--
--   mserve -servants 'old1@h1:7001,new1@h2:7001?tag=canary' \
--          -plugins scripts/canary.lua -algo canary

local PERCENT = 5

local function pick(call, servants, plan, canary)
  local best, load, present = nil, nil, false
  for j = 1, #servants do
    local s = servants[j]
    if (s.tags.canary == true) == canary and s.available then
      present = true
      if plan.can_take(j, call.index) then
        local l = s.in_flight + s.backlog
        if best == nil or l < load then best, load = j, l end
      end
    end
  end
  return best, present
end

mserve.picker("canary", function(call, servants, plan)
  local canary = math.random(100) <= PERCENT
  local best, present = pick(call, servants, plan, canary)
  if not present then
    best = pick(call, servants, plan, not canary)
  end
  return best
end)
