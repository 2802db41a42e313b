-- tiered: route by a date argument to servants tagged rdb (recent data) or
-- hdb (history), the kdb+ mserve's server types: calls whose date is older
-- than RECENT go to hdb servants, the others to rdb servants. The date is
-- the first positional argument that reads as a date (YYYY-MM-DD) or
-- timestamp, or else the earliest named one; a call without one goes to
-- rdb. Among the servants of its tier, a call goes to
-- the one with the fewest pending calls; while none of them is free, it
-- waits (it never runs on the wrong tier).
--
--   mserve -servants 'rdb1@h1:7001?tag=rdb,hdb1@h2:7001?tag=hdb' \
--          -plugins scripts/tiered.lua -algo tiered

local RECENT = 48 * 3600 -- seconds of history the rdb servants hold

-- date returns the call's date: the first positional argument that reads
-- as a date, or else the earliest named one.
local function date(args)
  for _, v in ipairs(args) do
    local t = mserve.date(v)
    if t then return t end
  end
  local earliest = nil
  for _, v in pairs(args) do
    local t = mserve.date(v)
    if t and (earliest == nil or t < earliest) then earliest = t end
  end
  return earliest
end

local function tier(call)
  local args = call.args
  if type(args) ~= "table" then return "rdb" end
  local t = date(args)
  if t and t < mserve.now() - RECENT then return "hdb" end
  return "rdb"
end

mserve.picker("tiered", function(call, servants, plan)
  local want = tier(call)
  local best, load = nil, nil
  for j = 1, #servants do
    local s = servants[j]
    if s.tags[want] and plan.can_take(j, call.index) then
      local l = s.in_flight + s.backlog
      if best == nil or l < load then best, load = j, l end
    end
  end
  return best
end)

-- The tier as a routing string, so that match-style locality can work
-- within a tier: MSERVE_ROUTING=tier.
mserve.route("tier", function(call) return tier(call) end)
