-- wrk script: POST /predict over many sessions (SESSIONS, default 1000), a different value each time.
local sessions = tonumber(os.getenv("SESSIONS") or "1000")
local counter = 0
local thread_tag = 0

function setup(thread)
  thread_tag = thread_tag + 1
  thread:set("tag", thread_tag)
end

request = function()
  counter = counter + 1
  local sid = "t" .. tostring(tag or 0) .. "-" .. tostring(counter % sessions)
  local body = string.format('{"session_id":"%s","value":%.4f}', sid, (counter % 97) / 97)
  return wrk.format("POST", "/predict", {["Content-Type"] = "application/json"}, body)
end
