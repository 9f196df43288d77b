module email-relay/pause

go 1.22
