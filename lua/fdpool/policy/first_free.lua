-- first_free: the seed's policy: the first worker with room, in id order.
return function(workers, conn)
  for i = 1, #workers do
    local w = workers[i]
    if w.state == "free" then return i end
  end
  return nil
end
